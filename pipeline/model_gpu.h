/* model_gpu.h — the GPU forward pass (pipeline/model_gpu.c over the kernels of kernels/forward_gpu.cu and
 * cuBLAS): the same model as pipeline/model.h for llama / mistral / qwen2 / qwen3 (RMSNorm, RoPE with the
 * config's theta / scaling / partial rotary, grouped-query attention, qk-norm, biases, SwiGLU, tied or
 * untied head) and qwen3_moe (router softmax, top-k experts, renormalized when norm_topk_prob), and
 * (helper "gpuhybrid") the hybrid families qwen3_5, qwen3_5_moe and qwen3_next: Gated DeltaNet layers
 * (kernels/deltanet_gpu.h: cuBLAS in_proj, causal conv + SiLU, the recurrent gated delta rule, gated
 * RMSNorm, out_proj; conv and delta states per sequence in the GPU cache), gated full attention (q_proj
 * [query | gate] per head, sigmoid gate, partial rotary, zero-centered norms), the sigmoid-gated shared
 * expert, fused 3-D experts (row ranges of one matrix) and qwen3_next's interleaved projections; fp32, bf16
 * or an artifact's packed weights (checked against the CPU: tests/gpupacked.sh; weights re-quantized at
 * load, `packed` below, are refused for these families: not verified). The hybrid path is switched
 * by tq_gmodel_hybrid_enabled() (on by default; environment TQ_GPU_HYBRID=0 turns it off); when off,
 * tq_gmodel_supports sends those families to the CPU.
 *
 * Weights are read from the same tq_wsource, tensor by tensor (one host staging buffer of the largest
 * tensor), for the layer range [l0, l1) only, and kept on the device in fp32 (exact comparisons with the
 * CPU) or bf16; GEMMs are cublasGemmEx with fp32 accumulation (fp32: no TF32). With `packed` set to a
 * weight codec (e.g. "tq4"), the linear weights are quantized on the GPU at load (tq_quantize_gpu_dev)
 * and kept packed; each GEMM first dequantizes its weight into a scratch (tq_dequantize_gpu_dev): bf16
 * with `bf16` set (bf16 GEMM), else fp32 (fp32 GEMM).
 *
 * Packed from an artifact (helper "gpupacked"): with `artifact` set to the directory of the tqpipe artifact
 * the source reads, every linear weight (and the embedding / lm_head) that the artifact stores quantized is
 * uploaded as its stored packed parts (tq_artifact_read: checksum verified; each tensor's own codec, group
 * and seed, as the allocator chose them; no CPU dequantize, no re-quantize) and dequantized per GEMM into
 * the scratch (bf16 or fp32 as above). The scratch holds the largest row block one GEMM dequantizes (one
 * expert of fused 3-D experts, a row chunk of the head), so device memory is the packed bytes plus one
 * scratch. Embedding rows are dequantized per token (fp32). Tensors stored as f32 / fp16 / bf16 are loaded
 * as plain weights. Mixed codecs are fine: every tensor carries its own layout.
 *
 * The KV cache lives on the device (full-attention layers only; codec seeds by the global full-attention
 * index as on the CPU, so tq codes match any layer split), plus the recurrent state of linear layers: f32, fp16, bf16, int8 and TurboQuant tq2/tq3/tq4 (+nc) for K and V
 * (same codes as kernels/kvcache_ref.c; tq keys are scored in the rotated domain). The split codecs
 * (tq2.5/tq3.5) and QJL keys are CPU-only: tq_gmodel_supports says so.
 *
 * Activations [T x hidden] fp32 stay on the device between tq_gmodel_embed, tq_gmodel_layers and
 * tq_gmodel_head (so pipeline-parallel ranks can pass them with NCCL: tq_gmodel_x_dev); tq_gmodel_x_get /
 * _set copy them to / from the host. Without CUDA every entry answers TQ_ERR_NOGPU
 * (pipeline/model_gpu_stub.c) and tq_gmodel_gpu_present() is 0. */
#ifndef TQ_MODEL_GPU_H
#define TQ_MODEL_GPU_H

#include <stddef.h>

#include "arch.h"
#include "kvcache.h"
#include "model.h"
#include "status.h"

typedef enum { TQ_DEVICE_AUTO = 0, TQ_DEVICE_CPU, TQ_DEVICE_GPU } tq_device;

/* "auto", "cpu", "gpu" (also "cuda"). @return TQ_OK or TQ_ERR_ARG. */
tq_status tq_device_parse(const char* s, tq_device* out);

/* 1 when this build has CUDA and at least one GPU is visible. */
int tq_gmodel_gpu_present(void);
/* 1 when the hybrid families may run on the GPU: TQ_GPU_HYBRID (0/1) if set, else the build default. */
int tq_gmodel_hybrid_enabled(void);
/* 1 when the GPU path runs this architecture with these KV codecs; else 0 and a reason in why. */
int tq_gmodel_supports(const tq_arch* a, const tq_kv_codec* k, const tq_kv_codec* v, char* why, size_t cap);

typedef struct {
    int bf16;            /* weights (and GEMM inputs, the dequantize scratch) in bf16; 0: fp32 */
    const char* packed;  /* NULL, or a weight codec kept packed on the GPU and dequantized per GEMM */
    int group;           /* packed codec group (0: default) */
    uint64_t seed;       /* packed codec rotation seeds */
    int device;          /* CUDA device; -1: local_rank % device count (set with tq_gmodel_select_device) */
    const char* artifact; /* NULL, or the artifact directory the source reads: keep its packed tensors packed */
} tq_gmodel_opts;

void tq_gmodel_opts_init(tq_gmodel_opts* o);

/* How the GPU holds the weights (eval / validate --gpu-weights, job key stages.validate.gpu_weights):
 *   auto        packed for an artifact (unless its weights are re-quantized in memory), else fp32
 *   packed      an artifact's packed tensors as stored, dequantized per GEMM into bf16 (bf16 GEMMs);
 *               a checkpoint (e.g. the reference) in bf16
 *   packed-f32  the same with an fp32 scratch and fp32 GEMMs (agrees with the CPU to fp32 rounding;
 *               2x the scratch); a checkpoint in fp32
 *   bf16, f32   every weight dequantized at load into bf16 / fp32 */
typedef enum { TQ_GW_AUTO = 0, TQ_GW_PACKED, TQ_GW_PACKED_F32, TQ_GW_BF16, TQ_GW_F32 } tq_gpu_weights;

/* NULL or "auto", "packed", "packed-f32", "bf16", "f32". @return TQ_OK or TQ_ERR_ARG. */
tq_status tq_gpu_weights_parse(const char* s, tq_gpu_weights* out);
/* Fill o->bf16 / o->artifact for mode (legacy_bf16: the old --gpu-bf16 flag, used by auto for checkpoints);
 * artifact_dir: the artifact the source reads unmodified, or NULL (checkpoint, re-quantized source).
 * Returns what the weights will be: "packed", "packed-f32", "bf16" or "f32". */
const char* tq_gmodel_opts_weights(tq_gmodel_opts* o, tq_gpu_weights mode, int legacy_bf16, const char* artifact_dir);

/* Pick the CUDA device of this process: local_rank % device count. Returns the device or -1. */
int tq_gmodel_select_device(int local_rank);

typedef struct tq_gmodel tq_gmodel;
typedef struct tq_gkv tq_gkv;

tq_status tq_gmodel_load(tq_wsource* src, int l0, int l1, const tq_gmodel_opts* o, tq_gmodel** out);
void tq_gmodel_free(tq_gmodel** pm);
int tq_gmodel_hidden(const tq_gmodel* m);
int tq_gmodel_vocab(const tq_gmodel* m);
size_t tq_gmodel_weight_bytes(const tq_gmodel* m); /* device bytes of the weights (packed parts as stored) */
size_t tq_gmodel_scratch_bytes(const tq_gmodel* m); /* device bytes of the per-GEMM dequantize scratch */
int tq_gmodel_packed_tensors(const tq_gmodel* m);  /* weights kept packed on the device */
int tq_gmodel_device(const tq_gmodel* m);
void* tq_gmodel_stream(const tq_gmodel* m);        /* cudaStream_t */

tq_status tq_gmodel_kv_create(const tq_gmodel* m, const tq_kv_codec* kc, const tq_kv_codec* vc, int max_tokens,
                              uint64_t seed, tq_gkv** out);
void tq_gkv_free(tq_gkv** pk);
void tq_gkv_reset(tq_gkv* k);
size_t tq_gkv_bytes_per_token(const tq_gkv* k);        /* exact codec bytes (tq_kv_vec_bytes), every layer */
size_t tq_gkv_device_bytes_per_token(const tq_gkv* k); /* bytes stored on the device (rows 4-byte aligned) */
/* Benchmarks only: mark every layer as holding n tokens whose stored bytes are a fixed pattern (0x11), without
 * running the model, so a decode step at context n can be timed without an n-token prefill. */
tq_status tq_gkv_bench_fill(tq_gkv* k, int n);

/* Device activations := embedding rows of tokens (l0 == 0). */
tq_status tq_gmodel_embed(tq_gmodel* m, const int* tokens, int T);
/* Run this model's layers over the device activations (T tokens at positions pos0..). */
tq_status tq_gmodel_layers(tq_gmodel* m, tq_gkv* kv, int T, int pos0);
/* logits [T x vocab] (host) from the device activations (needs the last layer). */
tq_status tq_gmodel_head(tq_gmodel* m, int T, float* logits);
tq_status tq_gmodel_forward(tq_gmodel* m, tq_gkv* kv, const int* tokens, int T, int pos0, float* logits);

/* The device activations: room for T tokens is made by tq_gmodel_reserve. */
tq_status tq_gmodel_reserve(tq_gmodel* m, int T);
float* tq_gmodel_x_dev(tq_gmodel* m);
tq_status tq_gmodel_x_get(tq_gmodel* m, float* host, int T);
tq_status tq_gmodel_x_set(tq_gmodel* m, const float* host, int T);
tq_status tq_gmodel_sync(tq_gmodel* m);

#endif
