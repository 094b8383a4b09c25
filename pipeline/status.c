/* status.c — the one list of tq_status strings and the per-thread "last error" message. */
#include "status.h"

#include <stdio.h>
#include <string.h>

static _Thread_local char tq_err_msg[2048];

const char* tq_status_str(tq_status s)
{
    switch (s) {
    case TQ_OK: return "ok";
    case TQ_ERR_ARG: return "invalid argument";
    case TQ_ERR_NOMEM: return "out of memory";
    case TQ_ERR_IO: return "I/O error";
    case TQ_ERR_NOSPACE: return "no space left on device";
    case TQ_ERR_NOTFOUND: return "not found";
    case TQ_ERR_FORMAT: return "malformed input";
    case TQ_ERR_HDF5: return "HDF5 error";
    case TQ_ERR_CUDA: return "CUDA error";
    case TQ_ERR_NOGPU: return "no GPU available";
    case TQ_ERR_MPI: return "MPI error";
    case TQ_ERR_CORRUPT: return "corrupt data (checksum mismatch or truncation)";
    case TQ_ERR_NUMERIC: return "NaN or Inf in data";
    case TQ_ERR_UNSUPPORTED: return "unsupported";
    case TQ_ERR_PEER: return "another rank failed";
    case TQ_ERR_INJECTED: return "injected fault";
    case TQ_ERR_MAXCODE: break;
    }
    return "unknown error";
}

tq_status tq_failv(tq_status s, const char* fmt, va_list ap)
{
    /* format into a scratch buffer first: callers may pass tq_last_error() itself as an argument
     * ("cannot read %s: %s", path, tq_last_error()), and vsnprintf must not read what it writes */
    char msg[sizeof tq_err_msg];
    vsnprintf(msg, sizeof msg, fmt, ap);
    memcpy(tq_err_msg, msg, sizeof msg);
    return s;
}

tq_status tq_fail(tq_status s, const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tq_failv(s, fmt, ap);
    va_end(ap);
    return s;
}

const char* tq_last_error(void) { return tq_err_msg; }

void tq_clear_error(void) { tq_err_msg[0] = '\0'; }
