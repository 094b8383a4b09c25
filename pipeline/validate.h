/* validate.h — model evaluation against a reference: perplexity, mean KL divergence of the next-token
 * distributions and top-1 agreement over a token stream, with any weight source and KV cache codecs,
 * spread over MPI ranks. Used by `tqpipe eval` and by the pipeline's validate stage.
 *
 * Evaluation protocol (state it with every number):
 *   The token stream is cut into windows of `ctx` tokens starting every `stride` tokens (the last one
 *   may be shorter). Each window is run from an empty KV cache as one prefill; the token at position t
 *   of the stream is scored once, in the first window that contains it with at least one token before
 *   it (so with stride == ctx the first token of every window is context only). PPL = exp(mean NLL).
 *   KL = mean over scored positions of KL(P_ref || P_model), in nats; top-1 = share of scored positions
 *   where both argmaxes agree. The reference is the original weights with an fp16 KV cache.
 * Token files: ".tok" = raw little-endian int32 token ids (python/make_tokens.py writes them for HF
 *   tokenizers); any other extension is UTF-8 text for the llama2.c tokenizer: stories separated by
 *   lines "<|endoftext|>", each stripped and encoded with BOS (as llama2.c's pretokenizer does).
 * Ranks: "seq" gives every rank the whole model and windows round-robin; "layers" splits the layers
 *   evenly over ranks (pipeline parallel: rank r sends the activations of each window to rank r+1).
 *   Per-window sums are combined in window order, so the numbers do not depend on the rank count
 *   (beyond BLAS rounding, which is per window and rank-independent).
 * Device: with --device gpu (or auto on a GPU build with a visible GPU) the model runs through the GPU
 *   forward pass (pipeline/model_gpu.h); in layers mode activations move GPU to GPU with NCCL when every
 *   rank has its own GPU, else through the host over MPI (ranks sharing one GPU; logged). */
#ifndef TQ_VALIDATE_H
#define TQ_VALIDATE_H

#include <stdint.h>

#include "rt.h"
#include "status.h"

typedef enum { TQ_PAR_AUTO = 0, TQ_PAR_SEQ, TQ_PAR_LAYERS } tq_par_mode;

typedef struct {
    const char* model;       /* Hugging Face checkpoint directory, or NULL */
    const char* artifact;    /* tqpipe artifact directory (when model is NULL) */
    const char* ref;         /* reference checkpoint; NULL: the model's own weights with fp16 KV (none for an artifact) */
    const char* weights;     /* quantize the model's weights in memory with this codec (e.g. "tq4"), or NULL */
    int weights_group;       /* 0 = codec default */
    int quant_embed;         /* also quantize embeddings / lm_head in memory */
    uint64_t seed;           /* rotation seeds (weights and KV) */
    const char* kv_k;        /* KV codecs (kernels/kvcache.h); NULL = fp16 */
    const char* kv_v;
    int qjl;                 /* QJL residual stage on keys */
    const char* data;        /* token file (.tok) or text */
    const char* tokenizer;   /* llama2.c tokenizer for text; NULL: <model>/tokenizer.bin */
    int ctx;                 /* 0: min(512, max_position) */
    int stride;              /* 0: ctx */
    int64_t max_tokens;      /* 0: whole file */
    tq_par_mode parallel;
    int no_ref;              /* PPL only */
    double mem_per_rank;     /* bytes a rank may hold in weights (auto mode); 0 = 16 GiB */
    int quiet;
    int threads;             /* BLAS threads per rank (0 = 1: results then do not depend on the machine) */
    int device;              /* tq_device (model_gpu.h): 0 auto (GPU when built with CUDA, one is visible and
                              * the family / KV codecs run there), 1 cpu, 2 gpu */
    int gpu_bf16;            /* GPU: weights and GEMM inputs in bf16 (default fp32: agrees with the CPU) */
    const char* gpu_weights; /* GPU weights (model_gpu.h tq_gpu_weights): NULL/"auto" (an artifact stays packed,
                              * else fp32 or --gpu-bf16), "packed", "packed-f32", "bf16", "f32" */
} tq_eval_opts;

typedef struct {
    int ctx, stride, windows, ranks;
    int64_t tokens, scored;
    double nll, ppl;
    int has_ref;
    double ref_nll, ref_ppl, kl, top1;
    char kv_k[24], kv_v[24];
    double kv_k_bits, kv_v_bits;      /* bits per element, norms included */
    uint64_t kv_bytes_per_token;      /* every full-attention layer, K + V (hybrid: not the linear ones) */
    char weights[600];                /* weight source description */
    char parallel[8];                 /* "seq" or "layers" */
    double seconds, tokens_per_s;     /* model + reference forward passes */
    char device[8];                   /* "cpu" or "gpu" */
    char comm[8];                     /* layers mode over GPUs: "nccl" or "mpi" (host staging); else "" */
    char gpu_weights[12];             /* GPU: how the model's weights were held ("packed", "bf16", ...); else "" */
    uint64_t gpu_weight_bytes;        /* GPU: device bytes of the model's weights + dequantize scratch, max over ranks */
} tq_eval_metrics;

void tq_eval_opts_init(tq_eval_opts* o);

/* COLLECTIVE over rt's ranks. Every rank returns the same metrics; *json_out (may be NULL) gets a
 * malloc'd JSON object (free()). Errors agree across ranks (tq_rt_agree). */
tq_status tq_validate(const tq_rt* rt, const tq_eval_opts* o, tq_eval_metrics* m, char** json_out);

/* JSON text of the metrics (malloc'd). */
char* tq_eval_metrics_json(const tq_eval_metrics* m);

/* Load a token stream (see above). vocab > 0 checks every id. LOCAL. */
tq_status tq_load_tokens(const char* path, const char* tokenizer, int vocab, int64_t max_tokens, int** out,
                         int64_t* n);

#endif
