/* stage_fmt.h — tq_fmt(): snprintf for paths and messages built from other bounded strings, returning
 * -1 when the result did not fit (callers treat that as "path too long"). A function rather than
 * snprintf so that the pipeline's many "<dir>/<name>" joins do not each need a length proof for
 * -Wformat-truncation. */
#ifndef TQ_STAGE_FMT_H
#define TQ_STAGE_FMT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline int tq_fmt(char* dst, size_t cap, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int tq_fmt(char* dst, size_t cap, const char* fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
    return (n < 0 || (size_t)n >= cap) ? -1 : n;
}

#endif
