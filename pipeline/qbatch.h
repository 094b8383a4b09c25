/* qbatch.h — the quantize stage's batched engine: a rank's units (row slices of tensors) are grouped
 * into batches of consecutive units (in checkpoint file order) of a few MB, and each batch costs
 *   one read per contiguous file range (a reader thread fills the next batch while this one computes),
 *   one CPU loop (a worker pool over the batch's small units; big units use the codec's own threads)
 *   and/or one GPU round trip (H2D of the batch, one launch per unit, D2H of every output, one sync),
 *   one durable write + one journal commit for the whole batch (tq_journal_put_batch), on a writer
 *   thread, overlapping the next batch's computation.
 * instead of a file read, an allocation, a GPU synchronisation, a segment write and a journal line per
 * unit. Every unit's record is byte-identical to the one-unit-at-a-time path (stages/quantize.c with
 * TQ_QBATCH=0): the same quantizer on the same rows, quantized straight into the record's memory.
 *
 * Resume stays exact at unit granularity: a batch's units become done together when its commit is
 * durable; a kill loses at most the batches in flight (redone on resume, never counted as finished).
 *
 * Memory per rank (all allocated once, for the largest batch; S = max(batch bytes, largest unit),
 * U = largest unit):
 *   2 raw source slots (the reader fills one while the other computes)   2·S (pinned with a GPU)
 *   2 record arenas (packed output; one is written while the other fills) ≤ 2·S each, ≈ 0.3·S for tq4
 *   fp32 rows of the largest unit quantized on the CPU                    ≤ 2·U (16-bit sources)
 *   worker scratch (T threads x one small unit)                           ≤ T·256 KiB
 *   GPU: device input S + device output arena and its pinned host copy   ≤ 2·S each
 * so about 2·S + 2·(packed S) + 2·U on the host: with the defaults (8 MiB batches, 64 MiB max unit)
 * ≤ 340 MiB for tq4, ≤ 600 MiB in the worst case (f32 output); with 8 MiB units ≤ 60 MiB. Never the
 * model.
 *
 * Environment (all optional): TQ_QBATCH=0 turns batching off (per-unit path); TQ_QBATCH_BYTES (default
 * 8 MiB), TQ_QBATCH_UNITS (default 16384; 4 while a TQ_FAULT is armed, so "kill after K units" stays
 * close to K); TQ_QBATCH_THREADS (CPU workers; default TQ_THREADS, else online cores / ranks on the
 * node); TQ_QBATCH_GPU_MIN (weights a unit needs to go to the GPU; default 0 = every unit on the GPU
 * when each rank of the node has a GPU of its own (ranks on the node <= GPUs it sees), else 1024 x CPU
 * workers: with ranks sharing a GPU, below that the workers beat a kernel launch's ~10 us of host
 * time; GPU and CPU units of a batch run at the same time, bytes identical either way);
 * TQ_QBATCH_READER=0 reads in the main thread; TQ_QBATCH_STATS=1 logs every rank's phase timers. */
#ifndef TQ_QBATCH_H
#define TQ_QBATCH_H

#include <stdint.h>

#include "ckpt.h"      /* defines: tq_ckpt */
#include "manifest.h"  /* defines: tq_journal */
#include "rt.h"        /* defines: tq_rt, tq_progress */
#include "shardplan.h" /* defines: tq_unitlist */
#include "stage.h"     /* defines: tq_plan_entry */

typedef struct {
    uint64_t batch_bytes;  /* close a batch at this many source bytes */
    int64_t batch_units;   /* ... or this many units */
    int threads;           /* CPU worker threads of this rank */
    int use_gpu;           /* 1: units of >= gpu_min_elems weights go to the GPU */
    int64_t gpu_min_elems;
    int gpu_own;           /* 1: this rank has a GPU of its own (ranks on the node <= GPUs) */
    int reader;            /* 1: a reader thread reads the next batch while this one computes */
} tq_qbatch_opts;

typedef struct {
    int64_t units, batches, gpu_units, cpu_units, gpu_fallback; /* gpu_fallback: sent to the CPU after all */
    double t_read;         /* seconds in reads (reader thread) */
    double t_wait;         /* seconds the compute thread waited for the reader */
    double t_quant;        /* seconds computing (layout, CPU workers, GPU round trip, checksums) */
    double t_write;        /* seconds in the batch's durable write + commit (writer thread) */
    /* phases of the compute thread (seconds; TQ_QBATCH_STATS=1 prints them, the stage summary keeps
     * the slowest rank's): they add up to about t_setup + t_loop */
    double t_setup;        /* unit plan, batch layout, buffers (+ GPU context and pinned memory) */
    double t_loop;         /* the batch loop, wall */
    double t_launch;       /* issuing GPU work: H2D, launches, D2H (host time) */
    double t_cpu;          /* CPU units (worker pool + big units) */
    double t_gsync;        /* waiting for the GPU after the CPU units were done */
    double t_post;         /* GPU outputs into the records, NaN checks, checksums */
    double t_wwait;        /* waiting for the previous batch's commit (writer thread) */
    uint64_t bytes_in, bytes_out, mem_host, mem_dev;
} tq_qbatch_stats;

/* The quantize stage's own phases around the engine (stages/quantize.c times them), seconds. */
typedef struct {
    double ckpt;           /* opening the checkpoint (headers: from the unit table when it is valid) */
    double units;          /* unit list + keys */
    double plan;           /* codec plan (+ codecs.tsv) */
    double schedule;       /* file order, manifest load, this rank's units */
    double wait;           /* waiting for the other ranks at the end of the loop (imbalance) */
    double finish;         /* journal close, manifest compaction, output hash (without wait) */
    int table;             /* 1: headers from the unit table, 0: parsed (table missing or stale) */
} tq_qstage_times;

/* 1 unless TQ_QBATCH=0. */
int tq_qbatch_enabled(void);
/* Defaults from the environment (see top); use_gpu: the stage's device decision. LOCAL. */
void tq_qbatch_default_opts(const tq_rt* rt, int use_gpu, tq_qbatch_opts* o);

/* The units of u in checkpoint file order (file index, byte offset): a permutation of 0..n-1 for
 * tq_stage_schedule_ordered, and (cost not NULL) an estimate of each unit's work with the codec plan
 * assigns it: weights x a per-codec factor (tq 8, tq..r.. 16, bin1 4, rtn/ter 3, int8 2, kept as is 0)
 * + its source bytes, so that ranks get equal work, not equal bytes (a 24 MB int8 embedding costs
 * far less than 24 MB of tq4 experts). *order, *cost are malloc'd. LOCAL. */
tq_status tq_qbatch_file_order(const tq_ckpt* c, const tq_unitlist* u, const tq_plan_entry* plan, int64_t nplan,
                               int64_t** order, uint64_t** cost);

/* Quantize this rank's units mine[0..nmine) of u (keys[k] names unit k) with the codecs of plan and
 * seeds tq_tensor_seed(job_seed, tensor), recording each unit in j (opened with a segment) batch by
 * batch. Calls tq_fault_unit_done once per committed unit, updates prog (bytes) after each batch, and
 * stops early (TQ_OK, fewer units) when another rank has failed (tq_rt_peer_failed). On an error the
 * units of the failing batch before the failing unit are committed, then the error is returned.
 * LOCAL (no collectives). */
tq_status tq_qbatch_quantize(const tq_rt* rt, const tq_ckpt* c, const tq_unitlist* u, char* const* keys,
                             const int64_t* mine, int64_t nmine, const tq_plan_entry* plan, int64_t nplan,
                             uint64_t job_seed, const tq_qbatch_opts* o, tq_journal* j, tq_progress* prog,
                             tq_qbatch_stats* st);

/* Where the stage's time went: with TQ_QBATCH_STATS=1 every rank logs its phases; out (cap bytes)
 * gets the slowest rank's figures in one short line for the stage summary (state.json). COLLECTIVE. */
void tq_qbatch_report(const tq_rt* rt, const tq_qstage_times* ph, const tq_qbatch_stats* st, char* out, size_t cap);

#endif
