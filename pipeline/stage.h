/* stage.h — the stage driver: run directory, run state, the stage registry and the code every stage
 * shares (input hashing and invalidation, attempts, unit scheduling over the ranks of THIS run).
 *
 *   RUN/
 *     run.json          format + version, original job path, launch dir (written once, atomically)
 *     job.yaml          the job text the run uses (`tqpipe run` refreshes it; stages read it)
 *     state.json        per stage: status, input/output hashes, attempt, times, counts, error, log,
 *                       Slurm job id (rank 0 rewrites it atomically at every transition)
 *     model/            the converted checkpoint when the job's model is a llama2.c .bin
 *     <stage>/          units.tsv, manifest.tsv, journal/, seg/ (see manifest.h) + stage files
 *     artifact/         pack's output (HDF5 shards + index)
 *     slurm/            sbatch scripts, jobs.tsv (submit), logs/
 *
 * A stage's input hash = XXH3-64 of its option fingerprint (jobspec) and the output hashes of the
 * enabled stages before it. When it differs from the one recorded, the stage's folder is cleared and
 * every later stage is marked stale, with a message saying so. A stage whose inputs are unchanged
 * resumes from its finished units. */
#ifndef TQ_STAGE_H
#define TQ_STAGE_H

#include <stdint.h>

#include "ckpt.h"
#include "dtype.h"
#include "jobspec.h"
#include "manifest.h"
#include "rt.h"
#include "shardplan.h"
#include "status.h"

#define TQ_RUN_FORMAT "tqpipe-run"
#define TQ_RUN_VERSION 1

typedef struct {
    tq_job job;
    char dir[TQ_PATH_MAX];       /* run dir (absolute) */
    char model_dir[TQ_PATH_MAX]; /* HF checkpoint the stages read (job.model or RUN/model) */
    char artifact_dir[TQ_PATH_MAX];
    char* job_text;              /* job.yaml text */
} tq_run;

/* Load the job file and prepare its run directory (rank 0 writes run.json + job.yaml; others wait).
 * COLLECTIVE. run_dir_override may be NULL. */
tq_status tq_run_create(const tq_rt* rt, const char* job_path, const char* run_dir_override, tq_run* run);
/* Open an existing run directory (reads job.yaml + run.json). LOCAL. */
tq_status tq_run_open(const char* run_dir, tq_run* run);
void tq_run_release(tq_run* run);

/* ---- per-stage state (state.json) ----------------------------------------------------------- */

typedef struct {
    char status[16];          /* pending | running | done | failed | stale */
    char input_hash[17], output_hash[17];
    int attempt, ranks;
    double started, finished, seconds;
    int64_t units_total, units_done, recomputed, redone_bad;
    uint64_t bytes_in, bytes_out;
    char error[512], log[512], host[64], slurm_job[32], summary[512];
    int pid;
} tq_stage_state;

typedef struct {
    tq_stage_state s[TQ_STAGE_COUNT];
} tq_run_state;

/* Read RUN/state.json (all pending when absent). LOCAL. */
tq_status tq_state_load(const char* run_dir, tq_run_state* st);
/* Atomic rewrite. LOCAL (rank 0). */
tq_status tq_state_save(const char* run_dir, const tq_run_state* st);

/* ---- stage context and registry -------------------------------------------------------------- */

typedef struct tq_stage_ctx {
    const tq_rt* rt;
    tq_run* run;
    tq_stage_id id;
    char dir[TQ_PATH_MAX];    /* RUN/<stage> */
    int attempt;
    /* filled by the stage (global values, identical on every rank, unless noted) */
    int64_t units_total, units_done_before, units_done_now, recomputed, redone_bad;
    uint64_t bytes_in, bytes_out;
    uint64_t output_hash;
    char summary[512];
} tq_stage_ctx;

typedef tq_status (*tq_stage_fn)(tq_stage_ctx* ctx); /* COLLECTIVE */

typedef struct {
    tq_stage_id id;
    tq_stage_fn fn;           /* NULL: not available in this build */
    const char* summary;
} tq_stage_def;

/* The registry (defined in stages/stage.c, one entry per tq_stage_id). */
const tq_stage_def* tq_stage_registry(tq_stage_id id);

/* Run one stage under the current launcher: decides skip / resume / redo from state.json, runs it,
 * records the outcome. force=1 redoes a finished stage. *skipped (may be NULL) = 1 when up to date.
 * COLLECTIVE. */
tq_status tq_stage_execute(const tq_rt* rt, tq_run* run, tq_stage_id id, int force, int* skipped);

/* First enabled stage that is not done (TQ_STAGE_COUNT when all are). LOCAL. */
tq_stage_id tq_run_first_incomplete(const tq_run* run, const tq_run_state* st);

/* First enabled stage that is not done, or done with inputs that changed since (job options or an
 * earlier stage's output): where a resubmission must start. LOCAL. */
tq_stage_id tq_run_first_outdated(const tq_run* run, const tq_run_state* st);

/* stages/submit.c: write + submit the sbatch chain from `from` (exit code); 1 when sbatch exists. */
int tq_submit_chain(const tq_run* run, tq_stage_id from, int dry_run);
int tq_slurm_available(void);
void tq_slurm_env_load(const char* run_dir); /* SLURM_CONF recorded at submit, when unset */

/* ---- helpers for stage implementations --------------------------------------------------------- */

/* COLLECTIVE: sum n int64 values over ranks in place. */
tq_status tq_stage_sum_i64(const tq_rt* rt, int64_t* v, int n);
/* COLLECTIVE: broadcast n bytes from rank 0. */
tq_status tq_stage_bcast(const tq_rt* rt, void* buf, int n);

/* COLLECTIVE. Write units.tsv (rank 0, first attempt) for the unit list `keys`, load the manifest on
 * every rank, verify finished units' outputs when verify=1 (spread over ranks; a bad one gets a 'B'
 * record and is redone), and return the pending units assigned to THIS rank (LPT over the pending
 * units' bytes). *mine (malloc'd) lists unit indices, *nmine their count; *m the manifest. */
tq_status tq_stage_schedule(tq_stage_ctx* ctx, int64_t n, const char* const* keys, const uint64_t* bytes,
                            int verify, tq_manifest** m, int64_t** mine, int64_t* nmine);

/* Same, but the pending units are split over the ranks as contiguous ranges of `order` (a permutation
 * of 0..n-1, e.g. checkpoint file order) with about equal cost each (cost[i] per unit; NULL = bytes),
 * instead of LPT: each rank reads one region of the files (sequential, coalesced reads). The
 * imbalance is at most the costliest unit. COLLECTIVE. */
tq_status tq_stage_schedule_ordered(tq_stage_ctx* ctx, int64_t n, const char* const* keys, const uint64_t* bytes,
                                    const int64_t* order, const uint64_t* cost, int verify, tq_manifest** m,
                                    int64_t** mine, int64_t* nmine);

/* COLLECTIVE. End of a unit stage: reload + compact the manifest (rank 0), check that every unit is
 * done, apply the corrupt fault, fill units_done_now etc. `processed` = units this rank did now,
 * `recomputed` = of those, how many were already done and valid at the start. */
tq_status tq_stage_finish_units(tq_stage_ctx* ctx, int64_t processed, int64_t recomputed, tq_manifest** m);

/* ---- the stages implemented in stages/ (registered in stages/stage.c) -------------------------- */
tq_status tq_stage_ingest(tq_stage_ctx* ctx);   /* stages/ingest.c */
tq_status tq_stage_calibrate(tq_stage_ctx* ctx); /* stages/alloc_stages.c (issue 7) */
tq_status tq_stage_allocate(tq_stage_ctx* ctx);  /* stages/alloc_stages.c (issue 7) */
tq_status tq_stage_quantize(tq_stage_ctx* ctx); /* stages/quantize.c */
tq_status tq_stage_pack(tq_stage_ctx* ctx);     /* stages/pack.c */
tq_status tq_stage_validate(tq_stage_ctx* ctx); /* stages/publish_stage.c (calls the infer helper) */
tq_status tq_stage_publish(tq_stage_ctx* ctx);  /* stages/publish_stage.c */

/* The codec of every tensor, as quantize applies it and pack reads it (RUN/quantize/codecs.tsv). */
typedef struct {
    char name[TQ_MAX_NAME];
    char codec[16];
    int group;
    char role[32];
    int64_t rows, cols;
    uint64_t bytes;   /* tq_codec_bytes */
    tq_dtype dtype;   /* source dtype */
} tq_plan_entry;

/* Codec per tensor: allocate's plan.txt when that stage is enabled, else the job's rules, else the
 * default codec for matrices and the source precision for the rest. Sorted by name. LOCAL. */
tq_status tq_stage_codec_plan(const tq_run* run, const tq_ckpt* c, tq_plan_entry** out, int64_t* n, int* from_plan);
tq_status tq_plan_entries_write(const char* path, const tq_plan_entry* e, int64_t n);
tq_status tq_plan_entries_read(const char* path, tq_plan_entry** out, int64_t* n);
const tq_plan_entry* tq_plan_find(const tq_plan_entry* e, int64_t n, const char* name);

/* Unit keys ("<name>@<row0>+<nrows>") and source bytes of a unit list; free with the _free call. */
tq_status tq_stage_unit_keys(const tq_unitlist* u, char*** keys_out, uint64_t** bytes_out);
void tq_stage_unit_keys_free(char** keys, uint64_t* bytes);

/* stages/run.c: run the enabled stages from `from` on (COLLECTIVE; returns an exit code) and the
 * end-of-run summary (rank 0). */
int tq_run_stages(const tq_rt* rt, tq_run* run, tq_stage_id from, int force);
void tq_run_print_summary(const tq_run* run);

/* Codec label as plans write it: "tq4", or "rtn4:g64" when the group is not 128. */
void tq_stage_codec_label(const char* codec, int group, char* out, size_t cap);
/* Split a label back ("rtn4:g64" -> "rtn4", 64; "tq4" -> "tq4", 128). -1 when malformed. */
int tq_stage_codec_unlabel(const char* label, char codec[16], int* group);

/* Recursive delete of a folder (what invalidation does). LOCAL. */
tq_status tq_rmtree(const char* path);

/* Human size: "1.23 GB". */
void tq_fmt_bytes(double b, char* out, size_t cap);

#endif
