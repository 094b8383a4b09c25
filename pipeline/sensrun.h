/* sensrun.h — drivers over a whole checkpoint for issue 7:
 *  - tq_sensitivity_run: the sensitivity table (pipeline/sensitivity.h) of every tensor x candidate
 *    codec, from the H files of `tqpipe calibrate` (pipeline/calib.h); tensors dealt to MPI ranks.
 *  - tq_apply_plan: a "fake-quantized" checkpoint: every tensor quantized with the codec the plan (or
 *    one uniform codec) assigns — plainly or with GPTQ — and written back dequantized to fp32
 *    safetensors, so `tqpipe eval --model OUT --ref ORIGINAL` measures exactly the plan's damage.
 * Tensors without a calibrated input (embeddings, the tied head, lm_head) get Ω with uniform token
 * weights, ||ΔW||²_F / rows (pin them with a rule when that is not what you want); non-matrix tensors
 * (norms, biases) get one option: their stored dtype (f32/fp16/bf16) with Ω = 0. */
#ifndef TQ_SENSRUN_H
#define TQ_SENSRUN_H

#include <stdint.h>

#include "gptq.h"   /* defines: tq_gptq_opts */
#include "rt.h"     /* defines: tq_rt */
#include "status.h" /* defines: tq_status */

typedef struct {
    const char* model;           /* Hugging Face checkpoint directory */
    const char* hess_dir;        /* H files of tqpipe calibrate */
    const char* const* codecs;   /* candidate codec labels for matrices */
    int n_codecs;
    uint64_t seed;               /* job seed: rotation seed of a tensor = tq_tensor_seed(seed, name) */
    int gptq;                    /* measure Ω after GPTQ (codecs GPTQ supports; needs full H) */
    tq_gptq_opts gopts;
    const char* out;             /* table path (written by rank 0) */
    int quiet;
} tq_sens_opts;

typedef struct {
    int64_t tensors, rows, measured, no_h;
    double seconds;
} tq_sens_stats;

/* COLLECTIVE. */
tq_status tq_sensitivity_run(const tq_rt* rt, const tq_sens_opts* o, tq_sens_stats* st);

typedef struct {
    const char* model;    /* input checkpoint */
    const char* plan;     /* plan.txt, or NULL: `codec` for every matrix of a linear role */
    const char* codec;    /* uniform codec label (when plan == NULL) */
    int quant_embed;      /* uniform mode: also embeddings / lm_head */
    const char* hess_dir; /* needed with gptq */
    int gptq;
    tq_gptq_opts gopts;
    uint64_t seed;
    const char* out_dir;  /* written: model.safetensors (f32) + config.json (+ tokenizer.bin copied) */
} tq_apply_opts;

typedef struct {
    int64_t tensors, quantized, gptq_applied;
    uint64_t bytes;        /* Σ tq_codec_bytes of the assignment (f32/source bytes for the rest) */
    int64_t weights;
    double omega;          /* Σ Ω over the tensors with an H */
    double seconds;
} tq_apply_stats;

/* Local (one process). */
tq_status tq_apply_plan(const tq_apply_opts* o, tq_apply_stats* st);

#endif
