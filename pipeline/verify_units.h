/* verify_units.h — read every byte of a list of work units (pipeline/shardplan.h) of a checkpoint,
 * checksum it and count NaN/Inf values: what `tqpipe inspect --verify` and the pipeline's ingest stage
 * both run.
 *
 * Reading: the requested units are sorted by (file, offset) and cut into reads: units lying close
 * together in one file (gaps up to chunk/8) share ONE pread of at most `chunk_bytes` (checkpoints with
 * tens of thousands of small expert tensors would otherwise cost one syscall each); a unit larger than
 * the chunk is read in pieces of whole rows. Each read is checked while it is in cache, 16 KiB at a
 * time: XXH3-64 (seed 0) of the block, then the NaN/Inf test of the same block from L1 (one pass over
 * memory: the kernel's copy). If a read fails, its units are redone one by one through
 * tq_ckpt_read_raw, so errors name the exact tensor. Memory per rank: one buffer of max(chunk_bytes,
 * largest row), three with the reader thread (opts.reader_thread: a second thread does the preads up
 * to three reads ahead), whatever the model size. Pass many units per call: one unit per call works
 * but forgoes the coalescing.
 *
 * Checksums: a unit's xxh is XXH3-64 of its stored bytes (rows [row0, row0+nrows) as in the file).
 * A tensor's checksum (tq_verify_tensor_xxh) is the unit xxh itself when the tensor is one unit, else
 * XXH3-64 over the little-endian u64 xxh of its slices in row order. Units do not depend on the rank
 * count, so neither do the checksums.
 *
 * NaN/Inf: per element of the stored dtype (bf16, f16, f32). They are counted, not treated as errors:
 * the caller decides (inspect --verify fails, ingest refuses the input). */
#ifndef TQ_VERIFY_UNITS_H
#define TQ_VERIFY_UNITS_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"      /* defines: tq_ckpt, tq_ckpt_read_raw */
#include "rt.h"        /* defines: tq_rt, tq_progress */
#include "shardplan.h" /* defines: tq_unitlist, tq_unit, tq_shardplan */
#include "status.h"

/* 1 MiB: one Lustre RPC; larger chunks fall out of L2 between the copy and the hash (measured slower
 * from page cache: 4 MiB ~10% slower than 1 MiB), smaller ones cost more syscalls. */
#define TQ_VERIFY_DEFAULT_CHUNK ((size_t)1 << 20)

/* Result for one unit. */
typedef struct {
    uint64_t xxh;        /* XXH3-64 (seed 0) of the unit's bytes; 0 when status != TQ_OK */
    uint64_t bytes;      /* bytes read */
    int64_t nan, inf;    /* NaN / +-Inf elements */
    int64_t first_bad;   /* element index (within the unit) of the first NaN/Inf, -1 when none */
    int32_t status;      /* tq_status: TQ_OK, or the read error of this unit (message in the log) */
    int32_t pad_;
} tq_unit_check;

typedef struct {
    size_t chunk_bytes;    /* read size per pread (whole rows); 0 -> TQ_VERIFY_DEFAULT_CHUNK */
    tq_progress* progress; /* optional: updated with progress_base + bytes read so far */
    double progress_base;
    int log_errors;        /* log each unit read error (TQ_LOG WARN) */
    int reader_thread;     /* 1: a second thread does the preads, up to 3 reads ahead of the checks
                            * (3 buffers); worth it only when the rank has a second core of its own
                            * (tq_verify_reader_auto). 0: everything in the calling thread */
} tq_verify_opts;

typedef struct {
    uint64_t bytes;        /* bytes read */
    double seconds;        /* wall time of the loop */
    double cpu_seconds;    /* CPU time of the loop (user + system), the reader thread's included */
    int64_t units, failed; /* units verified, units whose read failed */
    int64_t nan, inf;      /* totals */
    char first_error[256]; /* message of the first failed unit ("" when none) */
} tq_verify_stats;

/* LOCAL. Verify units u->units[idx[i]] for i < n (idx NULL: units 0..n-1) of checkpoint c; results
 * in out[i] (n entries). Keeps going after a unit's read error so one pass lists every problem.
 * @return TQ_OK when every unit was read (NaN/Inf do not count as errors); otherwise the first read
 *         error (tq_last_error names the file/tensor); TQ_ERR_NOMEM; TQ_ERR_ARG for bad arguments. */
tq_status tq_verify_units(const tq_ckpt* c, const tq_unitlist* u, const int64_t* idx, int64_t n,
                          const tq_verify_opts* opts, tq_unit_check* out, tq_verify_stats* st);

/* COLLECTIVE. Every rank verifies its own units of plan (plan->n_ranks must equal rt->size), then
 * the results are gathered on rank 0: *all_out (rank 0 only, malloc'd) gets one entry per unit of
 * plan->units (indexed like the unit list) and *rank_stats_out (rank 0 only, malloc'd, rt->size entries)
 * each rank's stats. *total (every rank) gets the summed stats, with seconds = the slowest rank.
 * @return TQ_OK when the collective part worked, even if some units failed or hold NaN/Inf (look at
 *         total->failed / nan / inf, identical on every rank); an agreed error status otherwise. */
tq_status tq_verify_plan(const tq_rt* rt, const tq_ckpt* c, const tq_shardplan* plan, const tq_verify_opts* opts,
                         tq_unit_check** all_out, tq_verify_stats** rank_stats_out, tq_verify_stats* total);

/* COLLECTIVE. Same as tq_verify_plan, but the units are spread over the ranks in file order: sorted by
 * (file, offset) and cut into rt->size contiguous ranges of about equal bytes (imbalance at most one
 * unit), so every rank reads one long sequential stretch. This is what `inspect --verify` uses: an LPT
 * shard plan interleaves small tensors between ranks, which turns one sequential read per rank into
 * many short ones (measured: about half the throughput per rank at 2 ranks). Results are indexed like
 * u->units; checksums do not depend on the assignment. */
tq_status tq_verify_file_order(const tq_rt* rt, const tq_ckpt* c, const tq_unitlist* u, const tq_verify_opts* opts,
                               tq_unit_check** all_out, tq_verify_stats** rank_stats_out, tq_verify_stats* total);

/* 1 when a reader thread should pay off: the launcher bound this process to a slice of >= 2 CPUs of
 * the node (srun -c 2, mpirun --map-by slot:PE=2). 0 under mpirun's default binding (one core per
 * rank when np <= 2) and for unbound processes (a shared machine: measured slower under load). */
int tq_verify_reader_auto(void);

/* Tensor checksum from its units' results (see top). checks[] and units[] are parallel arrays of
 * the tensor's units, in row order. */
uint64_t tq_verify_tensor_xxh(const tq_unit_check* checks, int64_t n);

/* Count NaN and Inf elements in n elements of dtype t; returns the index of the first one, or -1. */
int64_t tq_count_nonfinite(const void* data, tq_dtype t, size_t n, int64_t* nan, int64_t* inf);

#endif
