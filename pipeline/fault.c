/* fault.c — TQ_FAULT parsing and the three hooks of fault.h. Kept tiny and stateless apart from the
 * per-stage counters so that it cannot disturb a normal run (no TQ_FAULT: every hook is a no-op). */
#include "fault.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h" /* defines: tq_errno_status */
#include "log.h"
#include "stage_fmt.h" /* defines: tq_fmt */

static struct {
    int armed_kill, armed_fail, armed_enospc, armed_slow;
    long kill_after, fail_after, enospc_after, slow_ms;
    long units, writes;
} g;

int tq_fault_active(void)
{
    const char* e = getenv("TQ_FAULT");
    return e && *e;
}

/* Find SPEC kind:stage:N[:rank] in TQ_FAULT; returns 1 and N when it applies to (stage, rank). */
static int find_spec(const char* kind, const char* stage, int rank, long* n)
{
    const char* e = getenv("TQ_FAULT");
    if (!e) return 0;
    char buf[1024];
    tq_fmt(buf, sizeof buf, "%s", e);
    char* save = NULL;
    for (char* tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char k[32] = "", s[32] = "";
        long v = -1, r = 0;
        int got = sscanf(tok, "%31[^:]:%31[^:]:%ld:%ld", k, s, &v, &r);
        if (got < 3 || strcmp(k, kind) || strcmp(s, stage)) continue;
        if (rank >= 0 && got == 4 && r != rank) continue;
        if (rank >= 0 && got == 3 && strcmp(kind, "corrupt") && rank != 0) continue;
        *n = v;
        return 1;
    }
    return 0;
}

void tq_fault_begin(const char* stage, int rank)
{
    memset(&g, 0, sizeof g);
    if (!tq_fault_active()) return;
    g.armed_kill = find_spec("kill", stage, rank, &g.kill_after);
    g.armed_fail = find_spec("fail", stage, rank, &g.fail_after);
    g.armed_enospc = find_spec("enospc", stage, rank, &g.enospc_after);
    g.armed_slow = find_spec("slow", stage, -1, &g.slow_ms);
    if (g.armed_kill || g.armed_fail || g.armed_enospc || g.armed_slow)
        TQ_LOG(TQ_LOG_WARN, "TQ_FAULT=%s armed for stage %s on this rank (test-only fault injection)", getenv("TQ_FAULT"),
               stage);
}

tq_status tq_fault_unit_done(void)
{
    g.units++;
    if (g.armed_slow && g.slow_ms > 0) usleep((useconds_t)g.slow_ms * 1000);
    if (g.armed_kill && g.units >= g.kill_after) {
        TQ_LOG(TQ_LOG_WARN, "TQ_FAULT: SIGKILL after %ld units", g.units);
        raise(SIGKILL);
    }
    if (g.armed_fail && g.units >= g.fail_after)
        return tq_fail(TQ_ERR_INJECTED, "TQ_FAULT: injected failure after %ld units", g.units);
    return TQ_OK;
}

tq_status tq_fault_write_check(const char* path)
{
    if (!g.armed_enospc) return TQ_OK;
    if (g.writes++ >= g.enospc_after) return tq_errno_status(ENOSPC, "write (TQ_FAULT enospc)", path);
    return TQ_OK;
}

int64_t tq_fault_corrupt_unit(const char* stage)
{
    long n = -1;
    if (!find_spec("corrupt", stage, -1, &n)) return -1;
    return n;
}
