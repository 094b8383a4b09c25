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

#include <stddef.h>
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

/* ------ additions (helper "rt") ------------------------------------------------------------------
 * Progress protocol: every rank calls tq_progress_start (same order on every rank), update as often
 * as it likes (cheap: a clock read; at most one small non-blocking message per `interval` goes to
 * rank 0), and tq_progress_finish on EVERY path, error paths included (rank 0 waits there for every
 * rank's final count; a rank that skips it while others wait is a hang, not an error).
 * Non-root ranks never block in update; rank 0 only drains what has already arrived. */
/* Global amount done so far as rank 0 last saw it (rank 0; other ranks: their local amount). */
double tq_progress_done(const tq_progress* p);
/* Seconds since tq_progress_start. */
double tq_progress_elapsed(const tq_progress* p);

/* COLLECTIVE helpers so callers need no mpi.h. Each returns TQ_ERR_MPI (with a message) on failure. */
tq_status tq_rt_allreduce_sum_u64(const tq_rt* rt, uint64_t* vals, int n);   /* in place */
tq_status tq_rt_allreduce_sum_f64(const tq_rt* rt, double* vals, int n);     /* in place */
tq_status tq_rt_allreduce_max_f64(const tq_rt* rt, double* vals, int n);     /* in place */
tq_status tq_rt_allreduce_min_f64(const tq_rt* rt, double* vals, int n);     /* in place */
/* Broadcast `len` bytes from rank `root` (len must be equal on every rank). */
tq_status tq_rt_bcast(const tq_rt* rt, void* buf, size_t len, int root);
/* Gather a variable number of bytes from every rank to rank 0 (< 2 GiB per rank). On rank 0 *out is a
 * malloc'd buffer with every rank's bytes in rank order and counts[r] (malloc'd, size entries) the
 * bytes from rank r; on other ranks *out and *counts are NULL. Free with free(). */
tq_status tq_rt_gather_bytes(const tq_rt* rt, const void* send, size_t n, void** out, size_t** counts);

/* LOCAL, cheap (one MPI_Iprobe): has another rank already failed and entered tq_rt_agree? A rank whose
 * tq_rt_agree(rt, err) is called first sends a small notice to every other rank, so ranks still busy
 * in a long loop can poll this between work items, stop, and call tq_rt_agree(rt, TQ_OK) at once: the
 * agreement then returns the failing rank's error everywhere within one work item, not at loop end.
 * A failing rank waits at most TQ_AGREE_TIMEOUT seconds (env, default 60; 0 = forever) for the others
 * to join the agreement, then aborts the job (MPI_Abort) so a rank stuck elsewhere cannot hang it. */
int tq_rt_peer_failed(const tq_rt* rt);

/* Fault injection for tests (never set in production): TQ_FAULT_RT="fail:R" makes rank R's
 * tq_rt_fault_point() return TQ_ERR_INJECTED, "kill:R" SIGKILLs rank R there, "exit:R" makes it
 * _exit(3) without MPI_Finalize, "abort:R" calls tq_rt_abort. Returns TQ_OK otherwise. */
tq_status tq_rt_fault_point(const tq_rt* rt, const char* where);

#endif
