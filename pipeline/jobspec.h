/* jobspec.h — the job file: one YAML document saying which model to compress, where the run directory
 * and the output go, which stages run with which options, and the Slurm resources of each stage.
 *
 *   name: stories260k
 *   model: models/stories260K.bin       # HF checkpoint dir, or a llama2.c .bin (converted by ingest)
 *   run_dir: runs/stories260k           # manifest, unit outputs, logs (relative: to the launch dir)
 *   output: runs/stories260k/published  # published artifact (relative: to the launch dir)
 *   seed: 1234
 *   resources: {ntasks: 2, time: "00:10:00"}      # defaults for every stage
 *   stages:
 *     ingest: {}
 *     quantize:
 *       codec: tq4
 *       rules: [{role: norm, codec: f32}, {role: embed, codec: int8}]
 *       resources: {ntasks: 4, gpus_per_task: 1}
 *     pack: {zstd_level: 3}
 *     publish: {}
 *
 * Input paths (model, tokenizer, data files) are relative to the job file's folder, or, when nothing is
 * there, to the launch directory. Parsing uses libyaml's document API so every error names the
 * line: unknown keys, wrong types, impossible values (group 96, ntasks 0, time "1h") and stages whose
 * prerequisites are not enabled are all TQ_ERR_FORMAT with "FILE:LINE: ...". */
#ifndef TQ_JOBSPEC_H
#define TQ_JOBSPEC_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TQ_PATH_MAX 4096

/* The stages in execution order. Each stage depends on every enabled stage before it. */
typedef enum {
    TQ_STAGE_INGEST = 0,
    TQ_STAGE_CALIBRATE,
    TQ_STAGE_ALLOCATE,
    TQ_STAGE_QUANTIZE,
    TQ_STAGE_PACK,
    TQ_STAGE_VALIDATE,
    TQ_STAGE_PUBLISH,
    TQ_STAGE_COUNT
} tq_stage_id;

const char* tq_stage_name(tq_stage_id s);
tq_stage_id tq_stage_parse(const char* name); /* TQ_STAGE_COUNT when unknown */

/* Slurm resources of a stage (0 / "" = not set: sbatch's default). */
typedef struct {
    int nodes;
    int ntasks;
    int ntasks_per_node;
    int cpus_per_task;
    int gpus_per_task;
    char time[32];       /* Slurm time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS */
    char partition[64];
    char account[64];
    char qos[64];
    char mem[32];        /* per node, Slurm syntax: 4G, 500M */
    char constraint[64];
} tq_resources;

#define TQ_JOB_MAX_RULES 32
#define TQ_JOB_MAX_LIST 16

/* A codec rule: tensors of a role (or whose name contains `match`) get `codec`. First match wins. */
typedef struct {
    char role[32];       /* role name (arch.h tq_role_name) or "" */
    char match[128];     /* substring of the tensor name or "" */
    char codec[16];
    int group;           /* 0 = the stage's group */
    int line;
} tq_codec_rule;

typedef struct {
    int enabled;
    int line;            /* where the stage's block starts (1-based), 0 if absent */
    tq_resources res;    /* merged: job-level defaults, then the stage's own */
} tq_stage_cfg;

typedef struct {
    /* where it came from */
    char job_path[TQ_PATH_MAX];  /* absolute */
    char job_dir[TQ_PATH_MAX];   /* absolute folder of the job file */
    char launch_dir[TQ_PATH_MAX];/* absolute cwd the relative output paths are taken from */
    /* top level */
    int version;                 /* job format version (1) */
    char name[64];
    char description[256];
    char model[TQ_PATH_MAX];     /* absolute */
    int model_is_llama2c;        /* model ends in .bin: ingest converts it into RUN/model */
    char tokenizer[TQ_PATH_MAX]; /* absolute or "" */
    char run_dir[TQ_PATH_MAX];   /* absolute */
    char output[TQ_PATH_MAX];    /* absolute (publish target) */
    uint64_t seed;
    tq_stage_cfg stage[TQ_STAGE_COUNT];
    /* ingest */
    int ingest_verify;           /* read + checksum every byte (default 1) */
    int ingest_check_arch;       /* descriptor check (default 1) */
    /* quantize */
    char codec[16];              /* default codec, default "tq4" */
    int group;                   /* 64, 128 or 256 (default 128) */
    int n_allowed;
    char allowed[TQ_JOB_MAX_LIST][16];
    int n_rules;
    tq_codec_rule rules[TQ_JOB_MAX_RULES];
    uint64_t max_unit_bytes;     /* largest work unit (source bytes), default 64 MiB */
    char device[8];              /* auto | cpu | gpu */
    int verify_on_resume;        /* re-checksum finished units before resuming (default 1) */
    int gptq;                    /* GPTQ against RUN/calibrate/hessian (pipeline/qgptq.h), default 0 */
    int gptq_act_order;          /* GPTQ act-order (default 0) */
    double gptq_damp;            /* GPTQ relative dampening (default 0.01) */
    /* pack */
    int zstd_level;              /* 0 = no filter, default 3 */
    uint64_t shard_size;         /* max artifact shard bytes, default 2 GiB */
    /* calibrate (issue 7) */
    char calib_data[TQ_PATH_MAX];
    int64_t calib_tokens;
    int calib_ctx;
    char calib_parallel[8];      /* auto | seq | layers (default auto) */
    uint64_t calib_mem_per_rank; /* auto mode's per-rank limit in bytes (0 = 16 GiB) */
    int calib_diag_experts;      /* expert_h: diag -> only diag(H) for routed experts (default full) */
    /* allocate (issue 7) */
    double budget_bpw;           /* 0 = unset */
    uint64_t budget_bytes;       /* 0 = unset */
    /* validate */
    char eval_data[TQ_PATH_MAX];
    int eval_ctx;
    int eval_stride;
    int64_t eval_max_tokens;
    int n_kv;
    char kv_codecs[TQ_JOB_MAX_LIST][16];
    char eval_device[8];         /* auto | cpu | gpu (default auto: the GPU forward pass when available) */
    char eval_gpu_weights[12];   /* auto | packed | packed-f32 | bf16 | f32 (GPU weights; "" = auto: packed) */
    /* publish */
    char license[TQ_PATH_MAX];   /* optional LICENSE file to ship */
} tq_job;

/* Parse a job file. `launch_dir` NULL = the current directory. `run_dir_override` (may be NULL)
 * replaces run_dir; output defaults to RUN/published when the job gives none.
 * @return TQ_OK; TQ_ERR_NOTFOUND (file or model missing); TQ_ERR_FORMAT "FILE:LINE: what" for
 * syntax errors, unknown keys, wrong types, impossible values. Local. */
tq_status tq_job_load(const char* path, const char* launch_dir, const char* run_dir_override, tq_job* job);

/* Same from text; `path` names it in messages and sets job_dir. */
tq_status tq_job_parse(const char* text, const char* path, const char* launch_dir,
                       const char* run_dir_override, tq_job* job);

/* The codec (name, group) the job assigns to a tensor of role `role_name` and name `tensor`:
 * the first matching rule, else the default. */
void tq_job_codec_for(const tq_job* job, const char* role_name, const char* tensor, char codec[16], int* group);

/* Canonical text of everything that determines a stage's output (options + seed + model path),
 * used to detect changed inputs. Writes at most cap bytes. */
void tq_job_stage_fingerprint(const tq_job* job, tq_stage_id s, char* out, size_t cap);

/* Parse "2GB", "512MiB", "1e9", "4096" (bytes). 0 on success, -1 on error. */
int tq_parse_size(const char* s, uint64_t* out);
/* Slurm time string check. 1 if valid. */
int tq_slurm_time_valid(const char* s);

#endif
