/* log.c — timestamped, rank-tagged log lines on stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static int g_rank = -1;
static int g_min_level = -1;

void tq_log_set_rank(int rank) { g_rank = rank; }
int tq_log_rank(void) { return g_rank; }

static int min_level(void)
{
    if (g_min_level < 0) {
        const char* e = getenv("TQ_LOG_LEVEL");
        g_min_level = TQ_LOG_INFO;
        if (e) {
            if (!strcmp(e, "debug")) g_min_level = TQ_LOG_DBG;
            else if (!strcmp(e, "warn")) g_min_level = TQ_LOG_WARN;
            else if (!strcmp(e, "error")) g_min_level = TQ_LOG_ERR;
        }
    }
    return g_min_level;
}

void tq_log_msg(tq_log_level lvl, const char* file, int line, const char* fmt, ...)
{
    if ((int)lvl < min_level()) return;
    static const char* names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char buf[4096];
    int n;
    if (g_rank >= 0) n = snprintf(buf, sizeof buf, "%s.%03dZ [r%d] %s ", ts, (int)(tv.tv_usec / 1000), g_rank, names[lvl]);
    else n = snprintf(buf, sizeof buf, "%s.%03dZ [r-] %s ", ts, (int)(tv.tv_usec / 1000), names[lvl]);
    if (lvl == TQ_LOG_ERR && n < (int)sizeof buf) {
        const char* base = strrchr(file, '/');
        n += snprintf(buf + n, sizeof buf - (size_t)n, "[%s:%d] ", base ? base + 1 : file, line);
    }
    if (n < (int)sizeof buf) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "%s\n", buf);
    fflush(stderr);
}
