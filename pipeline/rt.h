/* rt.h — the MPI runtime every command that uses ranks stands on (the only place besides
 * pipeline/comm* that calls MPI directly).
 *  - tq_rt_init/finalize; rank, size; logging gets the rank.
 *  - Collective error agreement: tq_rt_agree(rc) is COLLECTIVE; every rank learns whether any rank
 *    failed, and the first failing rank's status and message are broadcast so every rank exits
 *    non-zero with that error. A rank that dies outright is caught by mpirun/srun (--kill-on-bad-exit);
 *    tq_rt_abort() is for unrecoverable errors and never hangs.
 *  - Progress: rank 0 prints "<verb> 41.2 GB (37%) in 812 s (52 MB/s), 1380 s left" for long loops. */
#ifndef TQ_RT_H
#define TQ_RT_H

#include <stdint.h>

#include "status.h"

typedef struct {
    int rank, size;
    int local_rank, local_size; /* within the node (MPI_COMM_TYPE_SHARED) */
    int initialized_mpi;        /* 1 if tq_rt_init called MPI_Init */
} tq_rt;

/* Initialise MPI (if not yet) and the runtime. Works without a launcher (size 1). COLLECTIVE. */
tq_status tq_rt_init(tq_rt* rt, int* argc, char*** argv);
void tq_rt_finalize(tq_rt* rt);

/* COLLECTIVE: combine every rank's status. Returns TQ_OK if all ok; otherwise the lowest failing
 * rank's status on every rank, with tq_last_error() set to "rank R: <its message>". */
tq_status tq_rt_agree(const tq_rt* rt, tq_status local);

/* Log, then MPI_Abort the whole job with code rc. Never returns. */
void tq_rt_abort(tq_status rc, const char* fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

void tq_rt_barrier(const tq_rt* rt);
double tq_rt_time(void); /* wall seconds (MPI_Wtime or monotonic clock) */

/* Progress across ranks (non-blocking reductions); only rank 0 prints, at most every `interval` s
 * (0 disables). `total` is the global amount (bytes or units); `unit` "B" prints sizes in GB. */
typedef struct tq_progress tq_progress;
tq_progress* tq_progress_start(const tq_rt* rt, const char* verb, double total, const char* unit, double interval);
void tq_progress_update(tq_progress* p, double local_done);
void tq_progress_finish(tq_progress** pp); /* COLLECTIVE: prints the final line with the rate */

#endif
