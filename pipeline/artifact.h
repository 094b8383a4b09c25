/* artifact.h — the packed tqpipe artifact: HDF5 shard files holding quantized tensors plus one JSON
 * index. Writer (the pack stage), reader (export, infer, verify), shard assignment, metrics update.
 * The on-disk format is specified in docs/FORMAT.md (format version TQ_ARTIFACT_FORMAT_VERSION).
 *
 *   ARTIFACT_DIR/
 *     model-00001-of-00003.tqa.h5     shard: /tensors/<name>/<part> datasets + per-tensor attributes
 *     model-00002-of-00003.tqa.h5
 *     model-00003-of-00003.tqa.h5
 *     model.tqa.index.json            index: every tensor -> shard, codec, shape, role, checksum;
 *                                     shard sizes; config.json, plan, provenance, job, metrics
 *
 * Properties:
 *  - Byte-reproducible: the same tensors added in the same order with the same meta give identical
 *    shard bytes (no timestamps, fixed libver bounds, fixed chunking and creation order).
 *  - Crash-safe: a shard is written under "<name>.tmp.<pid>" and renamed into place after fsync only
 *    when complete; the index is written atomically. A half-written shard never has the final name.
 *  - Serial HDF5 is enough: every shard is written by one process with the default (sec2) driver.
 *  - Checksum of a tensor: XXH3-64 (seed 0) streamed over its parts' bytes in part order
 *    (tq_artifact_checksum), stored as 16 hex chars in the shard and the index.
 *
 * Typical pack stage (tensors sorted by name, shard k written by rank k % nranks):
 *     tq_artifact_assign_shards(bytes, n, max_shard_bytes, shard_of, &nshards);   // every rank, same result
 *     for k in my shards:
 *         tq_shard_create(dir, k, nshards, &meta, &w);
 *         for each tensor i with shard_of[i] == k (in name order): tq_shard_add(w, &desc, &q, NULL);
 *         tq_shard_commit(&w);          // on error: tq_shard_abort(&w)
 *     barrier; rank 0: tq_artifact_write_index(dir, nshards, &meta);
 * All functions are LOCAL (no MPI); errors carry a tq_last_error() message naming file and tensor.
 * One writer / one tq_artifact per thread (HDF5 is not thread-safe); zstd chunks are compressed and
 * decompressed by internal worker threads (TQ_ARTIFACT_THREADS, default: online CPUs, at most 16) that
 * never call HDF5. */
#ifndef TQ_ARTIFACT_H
#define TQ_ARTIFACT_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"  /* defines: TQ_MAX_NAME, TQ_MAX_DIMS */
#include "codec.h" /* defines: tq_codec, tq_qtensor */
#include "dtype.h" /* defines: tq_dtype */
#include "status.h"

#define TQ_ARTIFACT_FORMAT "tqpipe-artifact"
#define TQ_ARTIFACT_FORMAT_VERSION 1
#define TQ_ARTIFACT_INDEX_NAME "model.tqa.index.json"
#define TQ_ARTIFACT_DEFAULT_SHARD_BYTES (4ull << 30) /* 4 GiB */

/* ---- shard assignment ------------------------------------------------------------------------- */

/* Cut tensors (already sorted by name; bytes[i] = packed bytes of tensor i, e.g. tq_codec_bytes) into
 * consecutive shards of at most max_shard_bytes each (a tensor larger than the limit gets a shard of
 * its own). Deterministic: depends only on (bytes, n, max_shard_bytes).
 * @param shard_of [n] out: 0-based shard index of each tensor.  @param nshards out: shard count (>= 1).
 * @return TQ_OK, TQ_ERR_ARG (n < 0, max 0). */
tq_status tq_artifact_assign_shards(const uint64_t* bytes, int64_t n, uint64_t max_shard_bytes,
                                    int* shard_of, int* nshards);

/* File name of 0-based shard k of n: "model-%05d-of-%05d.tqa.h5" with k+1 and n. */
void tq_artifact_shard_name(int k, int n, char* out, size_t out_cap);

/* ---- writing ------------------------------------------------------------------------------------- */

/* Text metadata recorded in the artifact. Any field may be NULL (stored as empty). Strings are copied. */
typedef struct {
    const char* config_json; /* the model's config.json text (stored in every shard and the index) */
    const char* plan;        /* the bit plan text (index) */
    const char* provenance;  /* source checkpoint checksums, JSON text (index) */
    const char* job;         /* the exact job file text (index; publish puts it in the model card) */
    const char* metrics;     /* validation metrics, JSON text (index; tq_artifact_set_metrics rewrites) */
    const char* model_name;  /* short source model name for the model card, e.g. "Qwen3.5-4B" */
    int zstd_level;          /* 0 = no filter (contiguous datasets); 1..22 = zstd filter 32015, chunked */
} tq_artifact_meta;

/* One tensor as the writer receives it. */
typedef struct {
    const char* name;        /* checkpoint tensor name, e.g. "model.layers.0.mlp.up_proj.weight" */
    const char* role;        /* tq_role_name(), e.g. "mlp_up"; NULL -> "other" */
    tq_dtype orig_dtype;     /* dtype in the source checkpoint */
    int orig_ndim;
    int64_t orig_shape[TQ_MAX_DIMS];
} tq_artifact_desc;

typedef struct tq_shard_writer tq_shard_writer;

/* Start shard k (0-based) of n in dir (created if missing) under a temp name. LOCAL.
 * @return TQ_OK, TQ_ERR_ARG, TQ_ERR_IO, TQ_ERR_HDF5. */
tq_status tq_shard_create(const char* dir, int k, int n, const tq_artifact_meta* meta,
                          tq_shard_writer** out);
/* Append one complete tensor (all parts filled). Tensors must be added in strictly increasing name
 * order. Checks: part sizes against tq_qtensor_layout(q->codec, rows, cols), rows*cols against the
 * original shape, no NaN/Inf in fp16/fp32 scale parts. checksum_out (may be NULL) receives the XXH3-64.
 * @return TQ_OK, TQ_ERR_ARG (order, sizes), TQ_ERR_NUMERIC, TQ_ERR_HDF5, TQ_ERR_NOSPACE. */
tq_status tq_shard_add(tq_shard_writer* w, const tq_artifact_desc* d, const tq_qtensor* q,
                       uint64_t* checksum_out);
/* Close, fsync and rename the shard into place; frees *pw (set to NULL) whatever the outcome. */
tq_status tq_shard_commit(tq_shard_writer** pw);
/* Same, and return the XXH3-64 of the whole committed shard file (what the index records as "xxh3"),
 * computed from the page cache before the rename: callers need not read the shard again. */
tq_status tq_shard_commit_hash(tq_shard_writer** pw, uint64_t* file_xxh3);
/* Drop the temp file; accepts NULL / *pw == NULL. */
void tq_shard_abort(tq_shard_writer** pw);

/* Scan the n committed shards in dir (reads tensor attributes only, no data) and write the index
 * atomically. Fails if a shard is missing or a tensor appears twice. LOCAL (rank 0 after a barrier).
 * @return TQ_OK, TQ_ERR_NOTFOUND, TQ_ERR_FORMAT, TQ_ERR_HDF5, TQ_ERR_IO. */
tq_status tq_artifact_write_index(const char* dir, int nshards, const tq_artifact_meta* meta);

/* Replace the index's "metrics" (JSON text; validated) crash-safely (atomic rewrite of the index).
 * Shards are not touched, so their checksums stay valid. */
tq_status tq_artifact_set_metrics(const char* dir, const char* metrics_json);

/* XXH3-64 over the parts' bytes in part order: the per-tensor checksum. */
uint64_t tq_artifact_checksum(const tq_qtensor* q);

/* ---- reading ------------------------------------------------------------------------------------- */

typedef struct {
    char name[TQ_MAX_NAME];
    char role[32];
    tq_codec codec;
    int64_t rows, cols;      /* quantized matrix: rows = prod(orig_shape[:-1]), cols = orig_shape[-1] */
    uint64_t seed;
    tq_dtype orig_dtype;
    int orig_ndim;
    int64_t orig_shape[TQ_MAX_DIMS];
    uint64_t checksum;       /* from the index */
    uint64_t bytes;          /* packed bytes (sum of parts) */
    int shard;               /* 0-based */
} tq_artifact_tensor;

typedef struct tq_artifact tq_artifact;

/* Open an artifact directory: parses and checks the index (format, version, fields); opens shards
 * lazily. @return TQ_OK, TQ_ERR_NOTFOUND, TQ_ERR_FORMAT (bad index or unsupported format version). */
tq_status tq_artifact_open(const char* dir, tq_artifact** out);
void tq_artifact_close(tq_artifact** pa);

int64_t tq_artifact_count(const tq_artifact* a);
const tq_artifact_tensor* tq_artifact_tensor_at(const tq_artifact* a, int64_t i); /* sorted by name */
const tq_artifact_tensor* tq_artifact_find(const tq_artifact* a, const char* name);
int tq_artifact_shard_count(const tq_artifact* a);
const char* tq_artifact_dir(const tq_artifact* a);
/* Index metadata ("" when absent; never NULL). */
const char* tq_artifact_config_json(const tq_artifact* a);
const char* tq_artifact_plan(const tq_artifact* a);
const char* tq_artifact_provenance(const tq_artifact* a);
const char* tq_artifact_job(const tq_artifact* a);
const char* tq_artifact_metrics(const tq_artifact* a);
const char* tq_artifact_model_name(const tq_artifact* a);
uint64_t tq_artifact_total_bytes(const tq_artifact* a);   /* sum of packed bytes */
int64_t tq_artifact_total_params(const tq_artifact* a);   /* sum of rows*cols */

/* Read a tensor's packed parts into q (allocated here; tq_qtensor_release frees) and verify the
 * checksum. @return TQ_OK, TQ_ERR_CORRUPT (checksum/size mismatch), TQ_ERR_NOTFOUND, TQ_ERR_HDF5. */
tq_status tq_artifact_read(tq_artifact* a, const tq_artifact_tensor* t, tq_qtensor* q);
/* Rows [row0, row0+nrows) only (no checksum check: it covers the whole tensor); q->rows = nrows. */
tq_status tq_artifact_read_rows(tq_artifact* a, const tq_artifact_tensor* t, int64_t row0,
                                int64_t nrows, tq_qtensor* q);
/* Read + verify + tq_dequantize_ref into out [rows*cols fp32] (out_cap in elements). */
tq_status tq_artifact_dequantize(tq_artifact* a, const tq_artifact_tensor* t, float* out,
                                 size_t out_cap);

/* ---- verification -------------------------------------------------------------------------------- */

typedef struct {
    int64_t tensors_checked;
    int64_t shards_checked;
    uint64_t bytes_checked;  /* packed bytes read and hashed */
    int64_t errors;          /* problems found (the first is in tq_last_error()) */
} tq_verify_report;

/* Verify an artifact: index format version; every shard present with the size the index records,
 * format version and shard number; every tensor of the index in its shard exactly once and no extra
 * tensor; parts sized as the codec says; checksums recomputed; and, when plan_text is non-NULL (or
 * the index holds a plan), every tensor named by the plan present exactly once. Only shards with
 * shard % nworkers == worker are read (for spreading over MPI ranks; 0, 1 = all).
 * @return TQ_OK or the first error (TQ_ERR_CORRUPT, TQ_ERR_NOTFOUND, TQ_ERR_FORMAT, ...) with a
 * message naming the file and tensor; report counts everything found. */
tq_status tq_artifact_verify(const char* dir, const char* plan_text, int worker, int nworkers,
                             tq_verify_report* report);

/* ---- publish ------------------------------------------------------------------------------------- */

/* Build a self-contained upload directory out_dir from a verified artifact: shards + index (copied),
 * README.md model card, SHA256SUMS, LICENSE* copied from source_dir when present. job_path (may be
 * NULL: the job text recorded in the index is used) is quoted in the card. Refuses (TQ_ERR_CORRUPT)
 * when the artifact does not verify. LOCAL (run on one rank). */
tq_status tq_publish(const char* artifact_dir, const char* out_dir, const char* job_path,
                     const char* source_dir);

#endif
