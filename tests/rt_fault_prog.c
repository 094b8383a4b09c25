/* rt_fault_prog.c — a tiny MPI job for tests/test_rt_fault.sh: every rank works through N units of
 * M milliseconds each, reporting progress (1 MB per unit), polling tq_rt_peer_failed between units,
 * and calls tq_rt_fault_point("unit K") at unit K (TQ_FAULT_RT picks the rank and the fault: fail,
 * kill, exit, abort). Then the ranks agree on the result; each prints one line
 *   RESULT rank=<r> status=<code> error=<message>
 * and exits 0 on success, 1 on an agreed failure.
 * usage: rt_fault_prog UNITS MS K [nopoll] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt.h"
#include "status.h"

int main(int argc, char** argv)
{
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tq_rt_init: %s\n", tq_last_error());
        return 1;
    }
    int units = argc > 1 ? atoi(argv[1]) : 100;
    int ms = argc > 2 ? atoi(argv[2]) : 10;
    int k = argc > 3 ? atoi(argv[3]) : 5;
    int poll = !(argc > 4 && !strcmp(argv[4], "nopoll")); /* nopoll: busy ranks never look for failures */
    tq_progress* p = tq_progress_start(&rt, "processed", 1e6 * units * rt.size, "B", 0.2);
    tq_status local = TQ_OK;
    for (int i = 0; i < units; i++) {
        if (i == k) {
            char where[32];
            snprintf(where, sizeof where, "unit %d", i);
            local = tq_rt_fault_point(&rt, where);
            if (local != TQ_OK) break;
        }
        if (poll && tq_rt_peer_failed(&rt)) break;
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        tq_progress_update(p, 1e6 * (i + 1));
    }
    tq_progress_finish(&p);
    tq_status s = tq_rt_agree(&rt, local);
    printf("RESULT rank=%d status=%d error=%s\n", rt.rank, (int)s, s == TQ_OK ? "" : tq_last_error());
    fflush(stdout);
    tq_rt_finalize(&rt);
    return s == TQ_OK ? 0 : 1;
}
