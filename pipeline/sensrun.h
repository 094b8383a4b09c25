/* sensrun.h — drivers over a whole checkpoint for issue 7:
 *  - tq_sensitivity_run: the sensitivity table (pipeline/sensitivity.h) of every tensor x candidate
 *    codec, from the H files of `tqpipe calibrate` (pipeline/calib.h); tensors dealt to MPI ranks.
 *  - tq_apply_plan: a "fake-quantized" checkpoint: every tensor quantized with the codec the plan (or
 *    one uniform codec) assigns — plainly or with GPTQ — and written back dequantized to fp32
 *    safetensors, so `tqpipe eval --model OUT --ref ORIGINAL` measures exactly the plan's damage.
 * The output head (lm_head, or the embedding when tied) is measured with the H of its input (the final
 * normed hidden states, collected by calibrate): Ω = logit error energy; the embedding's input-side use
 * is not added. Matrices without an H file get Ω with uniform token weights, ||ΔW||²_F / rows (an
 * untied input embedding: pin it with a rule when that is not what you want); non-matrix tensors
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
    /* KL probe (optional, probe_tokens > 0): per matrix, quantize it alone with probe_codec (plain),
     * run the probe tokens through the model and measure the mean KL divergence to the original;
     * every Ω of that tensor is mapped to KL units: Ω -> (KL/Ω(probe))·Ω with one probe codec, or
     * Ω -> a·Ω^p fitted in log-log through the (Ω, KL) points of several probe codecs ("tq2,bin1":
     * the KL of very low-bit codecs grows faster than linearly in Ω), so Ω is in KL units and
     * comparable across tensors (layer-output MSE alone is not: the downstream gain differs by layer
     * and the head's Ω is in logit units). Cost: one forward pass of probe_tokens per matrix; memory:
     * probe_tokens x vocab floats of reference log-probabilities per rank. */
    const char* probe_data;      /* token file or text (pipeline/validate.h tq_load_tokens) */
    const char* tokenizer;       /* for text; NULL: <model>/tokenizer.bin */
    int probe_tokens;            /* 0: no probe */
    int probe_ctx;               /* window length (default 256) */
    const char* probe_codec;     /* comma-separated, up to 4; default "tq2" */
} tq_sens_opts;

typedef struct {
    int64_t tensors, rows, measured, no_h, probed;
    double seconds, probe_seconds;
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
