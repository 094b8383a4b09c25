/* status.h — tqpipe's error codes and the macros that propagate them.
 *
 * Library code (kernels/ host side, pipeline/, stages/) never exits: it returns a tq_status and, for
 * anything a user must act on, records a human-readable message with tq_fail() naming the file,
 * tensor and what to do. The CLI prints tq_last_error() when a command fails.
 * Numeric values are pinned: manifests persist them. */
#ifndef TQ_STATUS_H
#define TQ_STATUS_H

#include <stdarg.h>

typedef enum {
    TQ_OK = 0,
    TQ_ERR_ARG = 10,      /* bad argument or option */
    TQ_ERR_NOMEM = 11,    /* allocation failed */
    TQ_ERR_IO = 20,       /* read/write/open failed */
    TQ_ERR_NOSPACE = 21,  /* disk full (ENOSPC / EDQUOT) */
    TQ_ERR_NOTFOUND = 22, /* missing file or tensor */
    TQ_ERR_FORMAT = 25,   /* malformed input (JSON, YAML, safetensors header, config) */
    TQ_ERR_HDF5 = 30,
    TQ_ERR_CUDA = 40,
    TQ_ERR_NOGPU = 41,    /* GPU path requested but no device */
    TQ_ERR_MPI = 45,
    TQ_ERR_CORRUPT = 50,  /* checksum mismatch, truncated file */
    TQ_ERR_NUMERIC = 55,  /* NaN/Inf in input or output */
    TQ_ERR_UNSUPPORTED = 60,
    TQ_ERR_PEER = 70,     /* another rank failed */
    TQ_ERR_INJECTED = 80, /* fault injection (tests only) */
    TQ_ERR_MAXCODE = 100
} tq_status;

/* One switch with every string. */
const char* tq_status_str(tq_status s);

/* Record a message for the user (printf format) and return s. The message is kept per thread until
 * the next tq_fail(); tq_last_error() returns it ("" when none). */
tq_status tq_fail(tq_status s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
tq_status tq_failv(tq_status s, const char* fmt, va_list ap);
const char* tq_last_error(void);
void tq_clear_error(void);

#define TQ_FORWARD(expr)                                                                           \
    do {                                                                                           \
        tq_status const s_ = (expr);                                                               \
        if (s_ != TQ_OK) return s_;                                                                \
    } while (0)

/* Return err with a message when cond holds. */
#define TQ_RETURN_IF(cond, err, ...)                                                               \
    do {                                                                                           \
        if (cond) return tq_fail((err), __VA_ARGS__);                                              \
    } while (0)

/* Set rc and jump to a cleanup label (sets rc as part of the jump: no forgotten rc). */
#define TQ_GOTO_IF(cond, err, label)                                                               \
    do {                                                                                           \
        if (cond) {                                                                                \
            rc = (err);                                                                            \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#define TQ_GOTO_FAIL(cond, err, label, ...)                                                        \
    do {                                                                                           \
        if (cond) {                                                                                \
            rc = tq_fail((err), __VA_ARGS__);                                                      \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

#define TQ_CHECK_GOTO(expr, label)                                                                 \
    do {                                                                                           \
        rc = (expr);                                                                               \
        if (rc != TQ_OK) goto label;                                                               \
    } while (0)

#endif
