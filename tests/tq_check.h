/* tq_check.h — the check macro the C unit tests share: CHECK(cond, fmt, ...) counts every check in
 * n_checks and every failure in n_failed, printing "FAILED file:line: cond: message" for a failure.
 * A test's main returns n_failed ? EXIT_FAILURE : EXIT_SUCCESS. Include it once, in one .c file. */
#ifndef TQ_CHECK_H
#define TQ_CHECK_H

#include <stdio.h>

static int n_failed = 0, n_checks = 0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        n_checks++;                                                                                \
        if (!(cond)) {                                                                             \
            n_failed++;                                                                            \
            printf("FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);                               \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            fflush(stdout);                                                                        \
        }                                                                                          \
    } while (0)

#endif
