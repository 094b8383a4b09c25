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
 * (norms, biases) get one option: their stored dtype (f32/fp16/bf16) with Ω = 0.
 *  - tq_plan_kl: the measured KL of whole plans (every tensor quantized as the plan says), the final
 *    guard of the allocate stage (stages/alloc_stages.c). */
#ifndef TQ_SENSRUN_H
#define TQ_SENSRUN_H

#include <stdint.h>

#include "allocate.h" /* defines: tq_plan */
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
    int gptq_plain_embed;        /* with gptq: embeddings plainly, as the quantize stage stores them */
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

/* Measured damage of whole plans: for each plan, every tensor the plan names is quantized plainly with its
 * codec (tq_quantize_ref, rotation seed tq_tensor_seed(seed, name), as the quantize stage does) and
 * dequantized in memory (with GPTQ where o->gptq and pipeline/qgptq.h applies it), the model is run over the first `tokens` tokens of `data` in windows of `ctx`
 * (default 256) tokens, and kl[i] is the mean KL divergence (nats/token) of its next-token distributions to
 * the original model's. COLLECTIVE: plans are dealt round-robin to the ranks, kl[] is complete on every
 * rank. Memory per rank: the fp32 model (twice while one plan loads) + tokens x vocab floats. Cost per
 * plan: quantizing every tensor once + one forward pass of `tokens` tokens. */
typedef struct {
    const char* model;     /* original checkpoint directory */
    const char* data;      /* token file (.tok) or text */
    const char* tokenizer; /* for text; NULL: <model>/tokenizer.bin */
    int tokens;            /* > 0 */
    int ctx;               /* window length; 0: 256 */
    uint64_t seed;         /* job seed */
    const char* hess_dir;  /* with gptq: the H files (RUN/calibrate/hessian) */
    int gptq;              /* quantize with GPTQ where the quantize stage does (pipeline/qgptq.h), CPU */
    tq_gptq_opts gopts;
} tq_plan_kl_opts;

tq_status tq_plan_kl(const tq_rt* rt, const tq_plan_kl_opts* o, const tq_plan* const* plans, int n, double* kl);

#endif
