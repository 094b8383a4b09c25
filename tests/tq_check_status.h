/* tq_check_status.h — check macros for unit tests of library calls that return tq_status:
 * CHECK(cond) and CHECK_RC(expr, want) count every check in g_checks and every failure in g_failed, and
 * print the failing line with the library's last error message. Include it once, in one .c file; main
 * returns g_failed ? EXIT_FAILURE : EXIT_SUCCESS. (tq_check.h is the variant with a printf message.) */
#ifndef TQ_CHECK_STATUS_H
#define TQ_CHECK_STATUS_H

#include <stdio.h>

#include "status.h"

static int g_failed, g_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        g_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,       \
                    tq_last_error());                                                              \
            g_failed++;                                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        tq_status got_ = (expr);                                                                   \
        g_checks++;                                                                                \
        if (got_ != (want)) {                                                                      \
            fprintf(stderr, "FAILED %s:%d: %s returned %d (%s), expected %d; last error: %s\n",    \
                    __FILE__, __LINE__, #expr, (int)got_, tq_status_str(got_), (int)(want),         \
                    tq_last_error());                                                              \
            g_failed++;                                                                            \
        }                                                                                          \
    } while (0)

#endif
