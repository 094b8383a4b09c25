/* model_gpu.c — host side of the GPU forward pass (see model_gpu.h): weight upload from a tq_wsource
 * (fp32, bf16 or packed + dequantized per GEMM), cuBLAS GEMMs, the layer loop, the device KV cache and
 * the MoE routing (router logits are copied to the host, where top-k runs exactly as the CPU does it).
 * Kernels: kernels/forward_gpu.cu. Built only with CUDA; pipeline/model_gpu_stub.c otherwise. */
#include "model_gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The hybrid families (Gated DeltaNet, gated attention, shared / fused experts) on the GPU, fp32 or bf16
 * weights or an artifact's packed weights (checked against the CPU on an H100: tests/gpupacked.sh; weights
 * re-quantized at load, opts.packed, stay refused for them): on by default, checked against the CPU on an
 * H100 (tests/gpuhybrid.sh); the environment variable TQ_GPU_HYBRID (0 / 1) overrides. */
#ifndef TQ_GPU_HYBRID_DEFAULT
#define TQ_GPU_HYBRID_DEFAULT 1 /* checked on an H100: tests/gpuhybrid.sh (eval NLL to 1e-7 of the CPU's) */
#endif

tq_status tq_device_parse(const char* s, tq_device* out)
{
    if (!s || !strcmp(s, "auto"))
        *out = TQ_DEVICE_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = TQ_DEVICE_CPU;
    else if (!strcmp(s, "gpu") || !strcmp(s, "cuda"))
        *out = TQ_DEVICE_GPU;
    else
        return tq_fail(TQ_ERR_ARG, "device '%s': use auto, cpu or gpu", s);
    return TQ_OK;
}

void tq_gmodel_opts_init(tq_gmodel_opts* o)
{
    memset(o, 0, sizeof *o);
    o->device = -1;
    o->seed = 42;
}

tq_status tq_gpu_weights_parse(const char* s, tq_gpu_weights* out)
{
    static const char* const names[] = {"auto", "packed", "packed-f32", "bf16", "f32"};
    if (!s) {
        *out = TQ_GW_AUTO;
        return TQ_OK;
    }
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            *out = (tq_gpu_weights)i;
            return TQ_OK;
        }
    return tq_fail(TQ_ERR_ARG, "GPU weights '%s': use auto, packed, packed-f32, bf16 or f32", s);
}

const char* tq_gmodel_opts_weights(tq_gmodel_opts* o, tq_gpu_weights mode, int legacy_bf16, const char* artifact_dir)
{
    const char* art = artifact_dir && artifact_dir[0] ? artifact_dir : NULL;
    if (mode == TQ_GW_AUTO) mode = art ? TQ_GW_PACKED : legacy_bf16 ? TQ_GW_BF16 : TQ_GW_F32;
    o->artifact = NULL;
    o->bf16 = mode == TQ_GW_PACKED || mode == TQ_GW_BF16;
    if ((mode == TQ_GW_PACKED || mode == TQ_GW_PACKED_F32) && art) {
        o->artifact = art;
        return mode == TQ_GW_PACKED ? "packed" : "packed-f32";
    }
    return o->bf16 ? "bf16" : "f32";
}

/* The GPU recurrence kernel's key head dims (kernels/deltanet_gpu.cu: tq_dn_gpu_dk_ok). */
static int tq_gmodel_dn_dk_ok(int dk)
{
    return dk == 16 || dk == 32 || dk == 64 || dk == 128;
}

int tq_gmodel_hybrid_enabled(void)
{
    const char* e = getenv("TQ_GPU_HYBRID");
    if (e && e[0]) return strcmp(e, "0") != 0;
    return TQ_GPU_HYBRID_DEFAULT;
}

int tq_gmodel_supports(const tq_arch* a, const tq_kv_codec* k, const tq_kv_codec* v, char* why, size_t cap)
{
    const char* mt = a->model_type;
    int d = a->head_dim;
    int hybrid = !strcmp(mt, "qwen3_5") || !strcmp(mt, "qwen3_5_moe") || !strcmp(mt, "qwen3_next");
    if (!hybrid && strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "qwen2") && strcmp(mt, "qwen3") &&
        strcmp(mt, "qwen3_moe")) {
        snprintf(why, cap, "model_type '%s' runs on the CPU only (GPU: llama, mistral, qwen2, qwen3, qwen3_moe, qwen3_5, "
                           "qwen3_5_moe, qwen3_next)", mt);
        return 0;
    }
    if (hybrid && !tq_gmodel_hybrid_enabled()) {
        snprintf(why, cap, "model_type '%s' runs on the CPU (the GPU path of the hybrid families is off: TQ_GPU_HYBRID=1 "
                           "turns it on)", mt);
        return 0;
    }
    if (hybrid && a->n_linear_layers > 0) {
        if (a->lin_k_heads <= 0 || a->lin_v_heads <= 0 || a->lin_v_heads % a->lin_k_heads || a->lin_v_dim <= 0 ||
            !tq_gmodel_dn_dk_ok(a->lin_k_dim) || a->lin_conv_kernel < 1 || a->lin_conv_kernel > 8) {
            snprintf(why, cap, "linear attention with key head dim %d, conv width %d, heads %d/%d runs on the CPU only (GPU: "
                               "key head dim 16/32/64/128, conv width up to 8)", a->lin_k_dim, a->lin_conv_kernel,
                     a->lin_k_heads, a->lin_v_heads);
            return 0;
        }
    }
    if (d <= 0 || d > 256 || (d & 1)) {
        snprintf(why, cap, "head_dim %d: the GPU attention takes even head_dim up to 256", d);
        return 0;
    }
    const tq_kv_codec* c[2] = {k, v};
    for (int i = 0; i < 2; i++) {
        if (!c[i] || c[i]->kind != TQ_KV_TQ) continue;
        if (c[i]->split || c[i]->qjl) {
            snprintf(why, cap, "KV codec %s (%s) runs on the CPU only (GPU: f32, fp16, bf16, int8, tq2, tq3, tq4, +nc)",
                     c[i]->name, i ? "values" : "keys");
            return 0;
        }
        if (d & (d - 1)) {
            snprintf(why, cap, "KV codec %s needs a power-of-two head_dim (%d)", c[i]->name, d);
            return 0;
        }
    }
    if (why && cap) why[0] = 0;
    return 1;
}

#ifdef TQ_HAVE_CUDA

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>

#include "artifact.h"    // defines: tq_artifact_open, tq_artifact_find, tq_artifact_read (packed from an artifact)
#include "codec_gpu.h"   // defines: tq_quantize_gpu_dev, tq_dequantize_gpu_dev
#include "deltanet_gpu.h" // defines: tq_dn_conv_silu_cuda, tq_dn_delta_rule_cuda (hybrid families)
#include "forward_gpu.h" // defines: the kernels' launchers, tq_gkv_side
#include "hadamard.h"    // defines: tq_mix64, tq_rot_sign
#include "lloydmax.h"    // defines: tq_lloydmax_unit_f32

#define CK(expr)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (expr);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return tq_fail(TQ_ERR_CUDA, "CUDA error %s at %s:%d (%s)", cudaGetErrorString(e_), __FILE__, __LINE__, #expr); \
    } while (0)

#define CB(expr)                                                                                   \
    do {                                                                                           \
        cublasStatus_t s_ = (expr);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return tq_fail(TQ_ERR_CUDA, "cuBLAS error %d (%s) at %s:%d", (int)s_, cublasGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)

int tq_gmodel_gpu_present(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n > 0;
}

int tq_gmodel_select_device(int local_rank)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) return -1;
    int d = (local_rank < 0 ? 0 : local_rank) % n;
    return cudaSetDevice(d) == cudaSuccess ? d : -1;
}

typedef struct {
    void* p;        /* device: fp32 or bf16 [rows x cols] (NULL when packed) */
    int bf16;
    int64_t rows, cols;
    int packed;
    tq_qtensor q;   /* packed: layout only (host data NULL) */
    uint8_t* dparts[TQ_QT_MAX_PARTS];
} gw;

typedef struct {
    float *attn_norm, *ffn_norm, *bq, *bk, *bv, *bo, *q_norm, *k_norm;
    gw wq, wk, wv, wo, w_gate, w_up, w_down;
    int moe;
    gw router;      /* fp32 always: top-k must see the same logits as closely as possible */
    gw *e_gate, *e_up, *e_down;
    /* hybrid families */
    int fused;                      /* fused 3-D experts: expert e = row ranges of fused_gu / fused_down */
    gw fused_gu, fused_down;        /* [E*2*mi x h] (gate rows, then up rows, per expert), [E*h x mi] */
    int shared;                     /* sigmoid-gated shared expert */
    gw s_gate, s_up, s_down, s_egate; /* s_egate [1 x h] fp32 */
    int lin;                        /* Gated DeltaNet layer */
    gw w_qkv, w_z, w_b, w_a, w_out; /* qwen3_next: w_qkv = in_proj_qkvz, w_b = in_proj_ba */
    float *conv_w, *A_log, *dt_bias, *lin_norm;
} glayer;

struct tq_gmodel {
    tq_arch* arch;
    int l0, l1;
    glayer* layers;
    gw embed, head;
    int head_is_embed;
    int64_t head_rows;  /* rows per GEMM of a packed head */
    float* final_norm;
    tq_rope rope;
    float eps;
    int nq, nkv, hd, hidden, vocab, I, E, K, mi;
    int bf16, packed;   /* packed: linear weights re-quantized with pcodec at load */
    tq_codec pcodec;
    tq_artifact* art;   /* packed from an artifact (opts.artifact): its quantized tensors stay packed */
    int npacked;        /* weights kept packed */
    uint64_t seed;
    int dev;
    cudaStream_t st;
    cublasHandle_t blas;
    int blas_ok;
    size_t bytes;
    /* activations for up to cap tokens */
    int cap;
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *qr, *cs, *logits;
    uint16_t* x16;
    int* tok;
    float *xin, *mo, *rl, *dw;
    int* drows;
    size_t logits_cap;
    void* work;
    size_t work_cap;
    void* wscratch;     /* dequantize scratch: bf16 (bf16 set) or fp32 elements */
    size_t wscratch_cap; /* elements */
    float* hstage;
    size_t hstage_cap;
    float* dstage;
    size_t dstage_cap;
    float* hcs;
    /* host MoE scratch */
    float* hrl;
    int *hsel, *hrows;
    float *hwsel, *hw;
    /* hybrid families (qwen3_5, qwen3_5_moe, qwen3_next) */
    int hybrid, next_layout, norm_plus1, out_gate, renorm;
    int Hk, Hv, dk, dv, ck, conv_dim, Is;
    int *kv_index, *lin_index;   /* [l1 - l0]: local full-attention / linear layer, -1 when the other kind */
    int n_kv_local, n_lin_local, kv_offset;
    int *map_q, *map_g, *map_mix, *map_z, *map_b, *map_a; /* device column maps (tq_fwd_gather_cols_cuda) */
    float *mix, *zz, *bb, *aa, *dno, *tmp, *gate, *sw;     /* activations of the hybrid layers */
};

struct tq_gkv {
    int nl;               /* full-attention layers of the model part */
    int n_lin;            /* linear-attention layers: recurrent state per layer */
    int* lin_len;         /* [n_lin] tokens seen */
    float* lin_state;     /* device [n_lin x lin_floats]: conv state (K-1) x conv_dim, then delta state Hv x dk x dv */
    size_t lin_floats;
    tq_gkv_shape sh;
    tq_gkv_side* side[2]; /* [nl] each */
    int* len;
    uint8_t* data[2];
    uint16_t* norms[2];
    float *sign[2], *cb[2], *bnd[2];
    size_t vb[2], stride[2];
    float rot_scale;
    int dev;
};

// ------------------------------------------------------------------------------------------------
// loading

static tq_status dmalloc(void** p, size_t bytes)
{
    *p = NULL;
    if (!bytes) bytes = 4;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        return tq_fail(TQ_ERR_NOMEM, "GPU out of memory allocating %zu bytes (%s): use fewer layers per rank (mpirun "
                                     "--parallel layers), bf16 weights or a shorter context", bytes, cudaGetErrorString(e));
    }
    return TQ_OK;
}

static tq_status read_host(tq_gmodel* m, tq_wsource* src, const char* name, int64_t rows, int64_t cols)
{
    int64_t r, c;
    TQ_FORWARD(src->shape(src->ctx, name, &r, &c));
    TQ_RETURN_IF(r * c != rows * cols, TQ_ERR_FORMAT, "%s: tensor %s has %lld x %lld values, the config implies %lld x %lld",
                 src->desc, name, (long long)r, (long long)c, (long long)rows, (long long)cols);
    size_t n = (size_t)(rows * cols);
    if (n > m->hstage_cap) {
        free(m->hstage);
        m->hstage = malloc(n * sizeof(float));
        m->hstage_cap = m->hstage ? n : 0;
        TQ_RETURN_IF(!m->hstage, TQ_ERR_NOMEM, "out of memory staging %s (%zu bytes)", name, n * sizeof(float));
    }
    TQ_FORWARD(src->read(src->ctx, name, m->hstage, n));
    for (size_t i = 0; i < n; i++)
        TQ_RETURN_IF(!isfinite(m->hstage[i]), TQ_ERR_NUMERIC, "%s: tensor %s holds NaN/Inf at element %zu", src->desc, name, i);
    return TQ_OK;
}

static tq_status stage_dev(tq_gmodel* m, size_t n)
{
    if (n <= m->dstage_cap) return TQ_OK;
    cudaFree(m->dstage);
    m->dstage = NULL;
    m->dstage_cap = 0;
    TQ_FORWARD(dmalloc((void**)&m->dstage, n * sizeof(float)));
    m->dstage_cap = n;
    return TQ_OK;
}

/* A small fp32 vector (norm, bias) on the device; plus1: a zero-centered norm (stored w, applied 1 + w). */
static tq_status up_vec1(tq_gmodel* m, tq_wsource* src, const char* name, int64_t n, int plus1, float** out)
{
    TQ_FORWARD(read_host(m, src, name, 1, n));
    if (plus1)
        for (int64_t i = 0; i < n; i++) m->hstage[i] += 1.0f;
    TQ_FORWARD(dmalloc((void**)out, (size_t)n * sizeof(float)));
    CK(cudaMemcpy(*out, m->hstage, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    m->bytes += (size_t)n * sizeof(float);
    return TQ_OK;
}

static tq_status up_vec(tq_gmodel* m, tq_wsource* src, const char* name, int64_t n, float** out)
{
    return up_vec1(m, src, name, n, 0, out);
}

/* A norm weight: zero-centered in the hybrid families (as pipeline/model.c's load_norm). */
static tq_status up_norm(tq_gmodel* m, tq_wsource* src, const char* name, int64_t n, float** out)
{
    return up_vec1(m, src, name, n, m->norm_plus1, out);
}

/* Grow the dequantize scratch to elems elements (bf16 or fp32, as the model's GEMMs). Load time only. */
static tq_status scratch_reserve(tq_gmodel* m, size_t elems)
{
    if (elems <= m->wscratch_cap) return TQ_OK;
    if (m->wscratch) cudaFree(m->wscratch);
    m->wscratch = NULL;
    m->wscratch_cap = 0;
    TQ_FORWARD(dmalloc(&m->wscratch, elems * (m->bf16 ? sizeof(uint16_t) : sizeof(float))));
    m->wscratch_cap = elems;
    return TQ_OK;
}

/* Codecs an artifact tensor is kept packed in: everything but the plain float formats. */
static int art_packable(const tq_artifact_tensor* t)
{
    tq_codec_kind k = t->codec.kind;
    return k != TQ_CODEC_INVALID && k != TQ_CODEC_F32 && k != TQ_CODEC_FP16 && k != TQ_CODEC_BF16;
}

/* An artifact tensor's packed parts, as stored (tq_artifact_read checks the checksum), onto the device;
 * gemm_rows: the most rows one GEMM dequantizes (sizes the scratch). */
static tq_status up_art_packed(tq_gmodel* m, const tq_artifact_tensor* t, const char* name, int64_t gemm_rows, gw* w)
{
    tq_qtensor q;
    memset(&q, 0, sizeof q);
    TQ_FORWARD(tq_artifact_read(m->art, t, &q));
    tq_status rc = TQ_OK;
    w->rows = t->rows;
    w->cols = t->cols;
    w->packed = 1;
    w->q = q; /* layout only: the host data pointers are cleared below */
    for (int i = 0; i < TQ_QT_MAX_PARTS; i++) w->q.part[i].data = NULL;
    for (int i = 0; i < q.nparts && rc == TQ_OK; i++) {
        rc = dmalloc((void**)&w->dparts[i], q.part[i].bytes);
        if (rc == TQ_OK && q.part[i].bytes &&
            cudaMemcpy(w->dparts[i], q.part[i].data, q.part[i].bytes, cudaMemcpyHostToDevice) != cudaSuccess)
            rc = tq_fail(TQ_ERR_CUDA, "artifact %s: copying part '%s' of %s to the GPU failed", tq_artifact_dir(m->art),
                         q.part[i].name, name);
        if (rc == TQ_OK) m->bytes += q.part[i].bytes;
    }
    tq_qtensor_release(&q);
    if (rc == TQ_OK) m->npacked++;
    if (rc == TQ_OK) rc = scratch_reserve(m, (size_t)gemm_rows * (size_t)t->cols);
    return rc;
}

/* How a matrix is held: W_LINEAR packed in a packed model (re-quantized, or as the artifact stores it), else
 * like W_PLAIN (fp32 or bf16 as the model); W_F32 always fp32 (routers, gates: top-k sees exact logits);
 * W_TABLE (embedding, lm_head) packed only as an artifact stores it. */
enum { W_PLAIN = 0, W_LINEAR, W_F32, W_TABLE };

/* A matrix [rows x cols]; gemm_rows: the most rows one GEMM uses (a fused expert, a head chunk). */
static tq_status up_w_mode(tq_gmodel* m, tq_wsource* src, const char* name, int64_t rows, int64_t cols, int mode,
                           int64_t gemm_rows, gw* w)
{
    if (m->art && (mode == W_LINEAR || mode == W_TABLE)) {
        const tq_artifact_tensor* t = tq_artifact_find(m->art, name);
        if (t && art_packable(t)) {
            TQ_RETURN_IF(t->rows * t->cols != rows * cols || t->cols != cols, TQ_ERR_FORMAT,
                         "artifact %s: tensor %s is stored as %lld x %lld, the config implies %lld x %lld",
                         tq_artifact_dir(m->art), name, (long long)t->rows, (long long)t->cols, (long long)rows,
                         (long long)cols);
            return up_art_packed(m, t, name, gemm_rows, w);
        }
    }
    const int linear = mode == W_LINEAR, force_f32 = mode == W_F32;
    TQ_FORWARD(read_host(m, src, name, rows, cols));
    size_t n = (size_t)(rows * cols);
    w->rows = rows;
    w->cols = cols;
    if (force_f32 || (!m->bf16 && !(m->packed && linear))) {
        TQ_FORWARD(dmalloc(&w->p, n * sizeof(float)));
        CK(cudaMemcpy(w->p, m->hstage, n * sizeof(float), cudaMemcpyHostToDevice));
        m->bytes += n * sizeof(float);
        return TQ_OK;
    }
    TQ_FORWARD(stage_dev(m, n));
    CK(cudaMemcpy(m->dstage, m->hstage, n * sizeof(float), cudaMemcpyHostToDevice));
    if (m->packed && linear) {
        w->packed = 1;
        TQ_FORWARD(tq_qtensor_layout(&w->q, &m->pcodec, rows, cols, tq_tensor_seed(m->seed, name)));
        for (int i = 0; i < w->q.nparts; i++) {
            TQ_FORWARD(dmalloc((void**)&w->dparts[i], w->q.part[i].bytes));
            m->bytes += w->q.part[i].bytes;
        }
        TQ_FORWARD(tq_quantize_gpu_dev(m->st, m->dstage, TQ_F32, &w->q, w->dparts, name, 1));
        m->npacked++;
        return scratch_reserve(m, (size_t)gemm_rows * (size_t)cols);
    }
    w->bf16 = 1;
    TQ_FORWARD(dmalloc(&w->p, n * sizeof(uint16_t)));
    TQ_FORWARD(tq_fwd_to_bf16_cuda(m->st, (uint16_t*)w->p, m->dstage, (int64_t)n));
    CK(cudaStreamSynchronize(m->st));
    m->bytes += n * sizeof(uint16_t);
    return TQ_OK;
}

/* A matrix: fp32 (force_f32 or fp32 model), bf16, or packed (linear weights of a packed model). */
static tq_status up_w(tq_gmodel* m, tq_wsource* src, const char* name, int64_t rows, int64_t cols, int linear, int force_f32, gw* w)
{
    return up_w_mode(m, src, name, rows, cols, force_f32 ? W_F32 : linear ? W_LINEAR : W_PLAIN, rows, w);
}

static void free_gw(gw* w)
{
    if (w->p) cudaFree(w->p);
    for (int i = 0; i < TQ_QT_MAX_PARTS; i++)
        if (w->dparts[i]) cudaFree(w->dparts[i]);
    memset(w, 0, sizeof *w);
}

static void free_glayer(glayer* L, int E)
{
    float* v[] = {L->attn_norm, L->ffn_norm, L->bq, L->bk, L->bv, L->bo, L->q_norm, L->k_norm,
                  L->conv_w, L->A_log, L->dt_bias, L->lin_norm};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (v[i]) cudaFree(v[i]);
    free_gw(&L->wq);
    free_gw(&L->wk);
    free_gw(&L->wv);
    free_gw(&L->wo);
    free_gw(&L->w_gate);
    free_gw(&L->w_up);
    free_gw(&L->w_down);
    free_gw(&L->router);
    gw* hy[] = {&L->fused_gu, &L->fused_down, &L->s_gate, &L->s_up, &L->s_down, &L->s_egate,
                &L->w_qkv, &L->w_z, &L->w_b, &L->w_a, &L->w_out};
    for (size_t i = 0; i < sizeof hy / sizeof hy[0]; i++) free_gw(hy[i]);
    for (int e = 0; e < E && !L->fused; e++) {
        if (L->e_gate) free_gw(&L->e_gate[e]);
        if (L->e_up) free_gw(&L->e_up[e]);
        if (L->e_down) free_gw(&L->e_down[e]);
    }
    free(L->e_gate);
    free(L->e_up);
    free(L->e_down);
}

static tq_status load_glayer(tq_gmodel* m, tq_wsource* src, int l, glayer* L)
{
    const tq_arch* a = m->arch;
    char n[TQ_MAX_NAME + 64];
    const char* p = a->prefix;
    int64_t h = m->hidden, qd = (int64_t)m->nq * m->hd, kd = (int64_t)m->nkv * m->hd;
#define NM(suffix) snprintf(n, sizeof n, "%slayers.%d.%s", p, l, suffix)
    NM("input_layernorm.weight");
    TQ_FORWARD(up_norm(m, src, n, h, &L->attn_norm));
    NM("post_attention_layernorm.weight");
    TQ_FORWARD(up_norm(m, src, n, h, &L->ffn_norm));
    L->lin = m->hybrid && a->layer_types[l] == TQ_LAYER_LINEAR_ATTN;
    if (L->lin) {
        int64_t kdl = (int64_t)m->Hk * m->dk, vdl = (int64_t)m->Hv * m->dv;
        if (m->next_layout) {
            NM("linear_attn.in_proj_qkvz.weight");
            TQ_FORWARD(up_w(m, src, n, 2 * kdl + 2 * vdl, h, 1, 0, &L->w_qkv));
            NM("linear_attn.in_proj_ba.weight");
            TQ_FORWARD(up_w(m, src, n, 2 * (int64_t)m->Hv, h, 1, 0, &L->w_b));
        } else {
            NM("linear_attn.in_proj_qkv.weight");
            TQ_FORWARD(up_w(m, src, n, 2 * kdl + vdl, h, 1, 0, &L->w_qkv));
            NM("linear_attn.in_proj_z.weight");
            TQ_FORWARD(up_w(m, src, n, vdl, h, 1, 0, &L->w_z));
            NM("linear_attn.in_proj_b.weight");
            TQ_FORWARD(up_w(m, src, n, m->Hv, h, 1, 0, &L->w_b));
            NM("linear_attn.in_proj_a.weight");
            TQ_FORWARD(up_w(m, src, n, m->Hv, h, 1, 0, &L->w_a));
        }
        NM("linear_attn.conv1d.weight");
        TQ_FORWARD(up_vec(m, src, n, (int64_t)m->conv_dim * m->ck, &L->conv_w));
        NM("linear_attn.A_log");
        TQ_FORWARD(up_vec(m, src, n, m->Hv, &L->A_log));
        NM("linear_attn.dt_bias");
        TQ_FORWARD(up_vec(m, src, n, m->Hv, &L->dt_bias));
        NM("linear_attn.norm.weight"); /* RMSNormGated: plain weight, not 1 + w */
        TQ_FORWARD(up_vec(m, src, n, m->dv, &L->lin_norm));
        NM("linear_attn.out_proj.weight");
        TQ_FORWARD(up_w(m, src, n, h, vdl, 1, 0, &L->w_out));
        goto mlp;
    }
    NM("self_attn.q_proj.weight");
    TQ_FORWARD(up_w(m, src, n, qd * (m->out_gate ? 2 : 1), h, 1, 0, &L->wq));
    NM("self_attn.k_proj.weight");
    TQ_FORWARD(up_w(m, src, n, kd, h, 1, 0, &L->wk));
    NM("self_attn.v_proj.weight");
    TQ_FORWARD(up_w(m, src, n, kd, h, 1, 0, &L->wv));
    NM("self_attn.o_proj.weight");
    TQ_FORWARD(up_w(m, src, n, h, qd, 1, 0, &L->wo));
    NM("self_attn.q_proj.bias");
    if (a->attn_bias || src->has(src->ctx, n)) {
        TQ_FORWARD(up_vec(m, src, n, qd * (m->out_gate ? 2 : 1), &L->bq));
        NM("self_attn.k_proj.bias");
        TQ_FORWARD(up_vec(m, src, n, kd, &L->bk));
        NM("self_attn.v_proj.bias");
        TQ_FORWARD(up_vec(m, src, n, kd, &L->bv));
    }
    NM("self_attn.o_proj.bias");
    if (src->has(src->ctx, n)) TQ_FORWARD(up_vec(m, src, n, h, &L->bo));
    NM("self_attn.q_norm.weight");
    if (a->qk_norm || src->has(src->ctx, n)) {
        TQ_FORWARD(up_norm(m, src, n, m->hd, &L->q_norm));
        NM("self_attn.k_norm.weight");
        TQ_FORWARD(up_norm(m, src, n, m->hd, &L->k_norm));
    }
mlp:
    NM("mlp.gate.weight");
    if (a->n_experts > 0 && src->has(src->ctx, n)) {
        L->moe = 1;
        int64_t E = a->n_experts, mi = a->moe_intermediate;
        TQ_FORWARD(up_w(m, src, n, E, h, 0, 1, &L->router));
        NM("mlp.shared_expert_gate.weight");
        if (src->has(src->ctx, n)) {
            int64_t Is = a->shared_intermediate;
            TQ_RETURN_IF(Is <= 0, TQ_ERR_FORMAT, "%s: layer %d has a shared expert but the config no shared_expert_intermediate_size",
                         src->desc, l);
            L->shared = 1;
            TQ_FORWARD(up_w(m, src, n, 1, h, 0, 1, &L->s_egate));
            NM("mlp.shared_expert.gate_proj.weight");
            TQ_FORWARD(up_w(m, src, n, Is, h, 1, 0, &L->s_gate));
            NM("mlp.shared_expert.up_proj.weight");
            TQ_FORWARD(up_w(m, src, n, Is, h, 1, 0, &L->s_up));
            NM("mlp.shared_expert.down_proj.weight");
            TQ_FORWARD(up_w(m, src, n, h, Is, 1, 0, &L->s_down));
        }
        NM("mlp.experts.gate_up_proj");
        if (src->has(src->ctx, n)) { /* fused 3-D experts: one matrix each, experts are row ranges */
            L->fused = 1;
            TQ_FORWARD(up_w_mode(m, src, n, E * 2 * mi, h, W_LINEAR, mi, &L->fused_gu)); /* GEMMs of mi rows */
            NM("mlp.experts.down_proj");
            TQ_FORWARD(up_w_mode(m, src, n, E * h, mi, W_LINEAR, h, &L->fused_down));
            return TQ_OK;
        }
        L->e_gate = calloc((size_t)E, sizeof(gw));
        L->e_up = calloc((size_t)E, sizeof(gw));
        L->e_down = calloc((size_t)E, sizeof(gw));
        TQ_RETURN_IF(!L->e_gate || !L->e_up || !L->e_down, TQ_ERR_NOMEM, "out of memory");
        for (int e = 0; e < E; e++) {
            char suf[96];
            snprintf(suf, sizeof suf, "mlp.experts.%d.gate_proj.weight", e);
            NM(suf);
            TQ_FORWARD(up_w(m, src, n, mi, h, 1, 0, &L->e_gate[e]));
            snprintf(suf, sizeof suf, "mlp.experts.%d.up_proj.weight", e);
            NM(suf);
            TQ_FORWARD(up_w(m, src, n, mi, h, 1, 0, &L->e_up[e]));
            snprintf(suf, sizeof suf, "mlp.experts.%d.down_proj.weight", e);
            NM(suf);
            TQ_FORWARD(up_w(m, src, n, h, mi, 1, 0, &L->e_down[e]));
        }
    } else {
        int64_t I = a->intermediate;
        NM("mlp.gate_proj.weight");
        TQ_FORWARD(up_w(m, src, n, I, h, 1, 0, &L->w_gate));
        NM("mlp.up_proj.weight");
        TQ_FORWARD(up_w(m, src, n, I, h, 1, 0, &L->w_up));
        NM("mlp.down_proj.weight");
        TQ_FORWARD(up_w(m, src, n, h, I, 1, 0, &L->w_down));
    }
#undef NM
    return TQ_OK;
}

static tq_status up_map(const int* h, int n, int** out)
{
    TQ_FORWARD(dmalloc((void**)out, (size_t)(n > 0 ? n : 1) * sizeof(int)));
    if (n > 0) CK(cudaMemcpy(*out, h, (size_t)n * sizeof(int), cudaMemcpyHostToDevice));
    return TQ_OK;
}

/* Column maps of the hybrid layers (pipeline/model.c does the same copies on the CPU): the gated q_proj
 * output per head [query hd | gate hd]; qwen3_next's in_proj_qkvz per key head [q dk | k dk | v rep*dv |
 * z rep*dv] and in_proj_ba per key head [b rep | a rep]. */
static tq_status make_maps(tq_gmodel* m)
{
    const int hd = m->hd, nq = m->nq, qd = nq * hd;
    const int dk = m->dk, dv = m->dv, Hk = m->Hk, Hv = m->Hv;
    const int kd = Hk * dk, vd = Hv * dv, rep = Hk > 0 ? Hv / Hk : 1, C = m->conv_dim;
    size_t cap = (size_t)2 * qd + (size_t)C + vd + 2 * (size_t)Hv + 4;
    int* h = malloc(cap * sizeof(int));
    TQ_RETURN_IF(!h, TQ_ERR_NOMEM, "out of memory");
    tq_status rc = TQ_OK;
    for (int hh = 0; hh < nq; hh++)
        for (int i = 0; i < hd; i++) {
            h[hh * hd + i] = hh * 2 * hd + i;
            h[qd + hh * hd + i] = hh * 2 * hd + hd + i;
        }
    rc = up_map(h, qd, &m->map_q);
    if (rc == TQ_OK) rc = up_map(h + qd, qd, &m->map_g);
    if (rc == TQ_OK && m->next_layout && m->n_lin_local > 0) {
        const int gw = 2 * dk + 2 * rep * dv;
        int* mz = h + C;
        for (int g = 0; g < Hk; g++) {
            for (int i = 0; i < dk; i++) {
                h[g * dk + i] = g * gw + i;
                h[kd + g * dk + i] = g * gw + dk + i;
            }
            for (int i = 0; i < rep * dv; i++) {
                h[2 * kd + g * rep * dv + i] = g * gw + 2 * dk + i;
                mz[g * rep * dv + i] = g * gw + 2 * dk + rep * dv + i;
            }
        }
        rc = up_map(h, C, &m->map_mix);
        if (rc == TQ_OK) rc = up_map(mz, vd, &m->map_z);
        if (rc == TQ_OK) {
            for (int g = 0; g < Hk; g++)
                for (int i = 0; i < rep; i++) {
                    h[g * rep + i] = g * 2 * rep + i;
                    h[Hv + g * rep + i] = g * 2 * rep + rep + i;
                }
            rc = up_map(h, Hv, &m->map_b);
        }
        if (rc == TQ_OK) rc = up_map(h + Hv, Hv, &m->map_a);
    }
    free(h);
    return rc;
}

tq_status tq_gmodel_load(tq_wsource* src, int l0, int l1, const tq_gmodel_opts* o, tq_gmodel** out)
{
    *out = NULL;
    tq_gmodel_opts def;
    if (!o) {
        tq_gmodel_opts_init(&def);
        o = &def;
    }
    TQ_RETURN_IF(!tq_gmodel_gpu_present(), TQ_ERR_NOGPU, "no GPU visible: run with --device cpu");
    const char* cfg = src->config_json(src->ctx);
    TQ_RETURN_IF(!cfg || !cfg[0], TQ_ERR_FORMAT, "%s: no config.json", src->desc);
    tq_arch* a = NULL;
    TQ_FORWARD(tq_arch_from_json(cfg, &a));
    tq_status rc = TQ_OK;
    tq_gmodel* m = calloc(1, sizeof *m);
    if (!m) {
        tq_arch_free(&a);
        return tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    m->arch = a;
    char why[256];
    TQ_GOTO_FAIL(!tq_gmodel_supports(a, NULL, NULL, why, sizeof why), TQ_ERR_UNSUPPORTED, fail, "%s: %s", src->desc, why);
    if (l1 < 0) l1 = a->n_layers;
    TQ_GOTO_FAIL(l0 < 0 || l1 > a->n_layers || l0 > l1, TQ_ERR_ARG, fail, "layer range [%d, %d) outside 0..%d", l0, l1,
                 a->n_layers);
    m->l0 = l0;
    m->l1 = l1;
    m->nq = a->n_heads;
    m->nkv = a->n_kv_heads;
    m->hd = a->head_dim;
    m->hidden = a->hidden;
    m->vocab = a->vocab;
    m->I = a->intermediate > 0 ? a->intermediate : 1;
    m->E = a->n_experts;
    m->K = a->top_k;
    m->mi = a->moe_intermediate > 0 ? a->moe_intermediate : 1;
    m->eps = (float)a->rms_eps;
    m->bf16 = o->bf16;
    m->seed = o->seed;
    TQ_GOTO_FAIL(m->nq <= 0 || m->nkv <= 0 || m->nq % m->nkv || m->hd <= 0, TQ_ERR_FORMAT, fail,
                 "%s: bad head configuration (%d heads, %d kv heads, head_dim %d)", src->desc, m->nq, m->nkv, m->hd);
    TQ_GOTO_FAIL(m->E > 0 && (m->K <= 0 || m->K > m->E), TQ_ERR_FORMAT, fail, "MoE config: top_k %d with %d experts", m->K, m->E);
    {
        const char* mt = a->model_type;
        m->hybrid = !strcmp(mt, "qwen3_5") || !strcmp(mt, "qwen3_5_moe") || !strcmp(mt, "qwen3_next");
        /* Qwen3_5MoeTopKRouter always renormalizes the top-k weights (as pipeline/model.c's moe_ffn) */
        m->renorm = a->norm_topk_prob || !strcmp(mt, "qwen3_5_moe");
        m->Is = a->shared_intermediate > 0 ? a->shared_intermediate : 0;
        if (m->hybrid) {
            m->next_layout = !strcmp(mt, "qwen3_next");
            m->norm_plus1 = 1;
            m->out_gate = a->attn_output_gate;
            m->Hk = a->lin_k_heads;
            m->Hv = a->lin_v_heads;
            m->dk = a->lin_k_dim;
            m->dv = a->lin_v_dim;
            m->ck = a->lin_conv_kernel;
            m->conv_dim = 2 * m->Hk * m->dk + m->Hv * m->dv;
        }
        int nl = l1 - l0 > 0 ? l1 - l0 : 1;
        m->kv_index = malloc((size_t)nl * sizeof(int));
        m->lin_index = malloc((size_t)nl * sizeof(int));
        TQ_GOTO_FAIL(!m->kv_index || !m->lin_index, TQ_ERR_NOMEM, fail, "out of memory");
        for (int l = 0; l < l1; l++) { /* same numbering as pipeline/model.c: KV codec seeds by global full-attention index */
            int lin = m->hybrid && a->layer_types[l] == TQ_LAYER_LINEAR_ATTN;
            if (l < l0) {
                m->kv_offset += !lin;
                continue;
            }
            m->kv_index[l - l0] = lin ? -1 : m->n_kv_local++;
            m->lin_index[l - l0] = lin ? m->n_lin_local++ : -1;
        }
    }
    if (o->artifact && o->artifact[0]) { /* packed as the artifact stores it */
        TQ_GOTO_FAIL(o->packed && o->packed[0], TQ_ERR_ARG, fail, "GPU weights: give a re-quantize codec (%s) or an "
                     "artifact to keep packed (%s), not both", o->packed, o->artifact);
        TQ_CHECK_GOTO(tq_artifact_open(o->artifact, &m->art), fail);
        TQ_GOTO_FAIL(strcmp(tq_artifact_config_json(m->art), cfg) != 0, TQ_ERR_ARG, fail,
                     "GPU weights: artifact %s is not the one %s reads (config.json differs)", o->artifact, src->desc);
    } else if (o->packed && o->packed[0]) {
        TQ_GOTO_FAIL(m->hybrid, TQ_ERR_UNSUPPORTED, fail,
                     "%s: packed GPU weights (%s) are not verified for model_type '%s': use fp32 or bf16 GPU weights, or "
                     "the CPU", src->desc, o->packed, a->model_type);
        TQ_CHECK_GOTO(tq_codec_parse(o->packed, o->group, &m->pcodec), fail);
        m->packed = 1;
    }
    TQ_CHECK_GOTO(tq_model_rope(cfg, a, &m->rope), fail);
    if (o->device >= 0) {
        cudaError_t e = cudaSetDevice(o->device);
        TQ_GOTO_FAIL(e != cudaSuccess, TQ_ERR_CUDA, fail, "cudaSetDevice(%d): %s", o->device, cudaGetErrorString(e));
    }
    {
        cudaError_t e = cudaGetDevice(&m->dev);
        if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&m->st, cudaStreamNonBlocking);
        TQ_GOTO_FAIL(e != cudaSuccess, TQ_ERR_CUDA, fail, "CUDA stream: %s", cudaGetErrorString(e));
        cublasStatus_t s = cublasCreate(&m->blas);
        TQ_GOTO_FAIL(s != CUBLAS_STATUS_SUCCESS, TQ_ERR_CUDA, fail, "cuBLAS init failed (%d)", (int)s);
        m->blas_ok = 1;
        cublasSetStream(m->blas, m->st);
        cublasSetMathMode(m->blas, CUBLAS_DEFAULT_MATH); /* fp32 GEMMs stay fp32 (no TF32) */
    }
    m->layers = calloc((size_t)(l1 - l0 > 0 ? l1 - l0 : 1), sizeof(glayer));
    TQ_GOTO_FAIL(!m->layers, TQ_ERR_NOMEM, fail, "out of memory");
    for (int l = l0; l < l1; l++) TQ_CHECK_GOTO(load_glayer(m, src, l, &m->layers[l - l0]), fail);
    {
        char n[TQ_MAX_NAME + 64];
        snprintf(n, sizeof n, "%sembed_tokens.weight", a->prefix);
        int last = l1 == a->n_layers;
        int tied = a->tied_embeddings || !src->has(src->ctx, "lm_head.weight");
        /* a packed head runs in row chunks that fit the scratch the layers need (at least 1024 rows) */
        int64_t hr = a->hidden > 0 ? (int64_t)(m->wscratch_cap / (size_t)a->hidden) : 0;
        m->head_rows = hr < 1024 ? 1024 : hr;
        if (m->head_rows > a->vocab) m->head_rows = a->vocab;
        if (l0 == 0 || (last && tied))
            TQ_CHECK_GOTO(up_w_mode(m, src, n, a->vocab, a->hidden, W_TABLE, last && tied ? m->head_rows : 0, &m->embed),
                          fail);
        if (last) {
            snprintf(n, sizeof n, "%snorm.weight", a->prefix);
            TQ_CHECK_GOTO(up_norm(m, src, n, a->hidden, &m->final_norm), fail);
            if (!tied)
                TQ_CHECK_GOTO(up_w_mode(m, src, "lm_head.weight", a->vocab, a->hidden, W_TABLE, m->head_rows, &m->head), fail);
            else
                m->head_is_embed = 1;
        }
    }
    if (m->hybrid) TQ_CHECK_GOTO(make_maps(m), fail);
    free(m->hstage); /* loading done: no host copy of any weight stays */
    m->hstage = NULL;
    m->hstage_cap = 0;
    cudaFree(m->dstage);
    m->dstage = NULL;
    m->dstage_cap = 0;
    tq_artifact_close(&m->art); /* every packed part is on the device */
    *out = m;
    return TQ_OK;
fail:
    tq_gmodel_free(&m);
    return rc;
}

static void free_act(tq_gmodel* m)
{
    void* p[] = {m->x, m->xb, m->q, m->k, m->v, m->att, m->hb, m->hb2, m->qr, m->cs, m->x16, m->tok, m->xin, m->mo, m->rl,
                 m->dw, m->drows};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        if (p[i]) cudaFree(p[i]);
    float* hy[] = {m->mix, m->zz, m->bb, m->aa, m->dno, m->tmp, m->gate, m->sw};
    for (size_t i = 0; i < sizeof hy / sizeof hy[0]; i++)
        if (hy[i]) cudaFree(hy[i]);
    m->mix = m->zz = m->bb = m->aa = m->dno = m->tmp = m->gate = m->sw = NULL;
    m->x = m->xb = m->q = m->k = m->v = m->att = m->hb = m->hb2 = m->qr = m->cs = m->xin = m->mo = m->rl = m->dw = NULL;
    m->x16 = NULL;
    m->tok = m->drows = NULL;
    free(m->hcs);
    free(m->hrl);
    free(m->hsel);
    free(m->hrows);
    free(m->hwsel);
    free(m->hw);
    m->hcs = m->hrl = m->hwsel = m->hw = NULL;
    m->hsel = m->hrows = NULL;
    m->cap = 0;
}

void tq_gmodel_free(tq_gmodel** pm)
{
    if (!pm || !*pm) return;
    tq_gmodel* m = *pm;
    if (m->st) cudaStreamSynchronize(m->st);
    if (m->layers)
        for (int l = m->l0; l < m->l1; l++) free_glayer(&m->layers[l - m->l0], m->E);
    free(m->layers);
    free_gw(&m->embed);
    free_gw(&m->head);
    if (m->final_norm) cudaFree(m->final_norm);
    free_act(m);
    int* maps[] = {m->map_q, m->map_g, m->map_mix, m->map_z, m->map_b, m->map_a};
    for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++)
        if (maps[i]) cudaFree(maps[i]);
    free(m->kv_index);
    free(m->lin_index);
    if (m->logits) cudaFree(m->logits);
    if (m->work) cudaFree(m->work);
    if (m->wscratch) cudaFree(m->wscratch);
    if (m->dstage) cudaFree(m->dstage);
    free(m->hstage);
    if (m->blas_ok) cublasDestroy(m->blas);
    if (m->st) cudaStreamDestroy(m->st);
    tq_artifact_close(&m->art);
    tq_arch_free(&m->arch);
    free(m);
    *pm = NULL;
}

int tq_gmodel_hidden(const tq_gmodel* m)
{
    return m->hidden;
}
int tq_gmodel_vocab(const tq_gmodel* m)
{
    return m->vocab;
}
size_t tq_gmodel_weight_bytes(const tq_gmodel* m)
{
    return m->bytes;
}
size_t tq_gmodel_scratch_bytes(const tq_gmodel* m)
{
    return m->wscratch_cap * (m->bf16 ? sizeof(uint16_t) : sizeof(float));
}
int tq_gmodel_packed_tensors(const tq_gmodel* m)
{
    return m->npacked;
}
int tq_gmodel_device(const tq_gmodel* m)
{
    return m->dev;
}
void* tq_gmodel_stream(const tq_gmodel* m)
{
    return (void*)m->st;
}

// ------------------------------------------------------------------------------------------------
// activations

tq_status tq_gmodel_reserve(tq_gmodel* m, int T)
{
    if (T <= m->cap) return TQ_OK;
    CK(cudaStreamSynchronize(m->st));
    free_act(m);
    int cap = T < 16 ? 16 : T;
    size_t h = (size_t)m->hidden, qd = (size_t)m->nq * m->hd, kd = (size_t)m->nkv * m->hd;
    size_t I = (size_t)m->I, mi = (size_t)m->mi, Is = (size_t)m->Is;
    size_t vd = (size_t)m->Hv * m->dv;
    size_t wmax = h;
    if (qd > wmax) wmax = qd;
    if (I > wmax) wmax = I;
    if (mi > wmax) wmax = mi;
    if (Is > wmax) wmax = Is;
    if (m->hybrid && vd > wmax) wmax = vd;
    size_t hbw = m->E > 0 ? (I > mi ? I : mi) : I; /* hb / hb2 width */
    if (Is > hbw) hbw = Is;
    TQ_FORWARD(dmalloc((void**)&m->x, cap * h * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->xb, cap * h * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->q, cap * qd * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->qr, cap * qd * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->k, cap * kd * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->v, cap * kd * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->att, cap * qd * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->hb, cap * hbw * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->hb2, cap * hbw * sizeof(float)));
    if (m->hybrid) {
        size_t C = (size_t)m->conv_dim, Hv = (size_t)m->Hv, kd = (size_t)m->Hk * m->dk;
        size_t tw = 2 * qd; /* gated q_proj output; qwen3_next: in_proj_qkvz / ba outputs */
        if (2 * kd + 2 * vd > tw) tw = 2 * kd + 2 * vd;
        if (2 * Hv > tw) tw = 2 * Hv;
        TQ_FORWARD(dmalloc((void**)&m->tmp, cap * tw * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->gate, cap * qd * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->mix, cap * (C > 0 ? C : 1) * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->zz, cap * (vd > 0 ? vd : 1) * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->dno, cap * (vd > 0 ? vd : 1) * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->bb, cap * (Hv > 0 ? Hv : 1) * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->aa, cap * (Hv > 0 ? Hv : 1) * sizeof(float)));
    }
    TQ_FORWARD(dmalloc((void**)&m->cs, cap * (size_t)(m->rope.rot_dim > 0 ? m->rope.rot_dim : 2) * sizeof(float)));
    TQ_FORWARD(dmalloc((void**)&m->x16, (cap * wmax + 2) * sizeof(uint16_t)));
    TQ_FORWARD(dmalloc((void**)&m->tok, cap * sizeof(int)));
    m->hcs = malloc(cap * (size_t)(m->rope.rot_dim > 0 ? m->rope.rot_dim : 2) * sizeof(float));
    TQ_RETURN_IF(!m->hcs, TQ_ERR_NOMEM, "out of memory");
    if (m->E > 0) {
        size_t E = (size_t)m->E, K = (size_t)m->K;
        TQ_FORWARD(dmalloc((void**)&m->xin, cap * h * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->mo, cap * h * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->rl, cap * E * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->dw, cap * K * sizeof(float)));
        TQ_FORWARD(dmalloc((void**)&m->drows, cap * K * sizeof(int)));
        TQ_FORWARD(dmalloc((void**)&m->sw, cap * sizeof(float)));
        m->hrl = malloc(cap * E * sizeof(float));
        m->hsel = malloc(cap * K * sizeof(int));
        m->hwsel = malloc(cap * K * sizeof(float));
        m->hrows = malloc(cap * K * sizeof(int));
        m->hw = malloc(cap * K * sizeof(float));
        TQ_RETURN_IF(!m->hrl || !m->hsel || !m->hwsel || !m->hrows || !m->hw, TQ_ERR_NOMEM, "out of memory");
    }
    m->cap = cap;
    return TQ_OK;
}

float* tq_gmodel_x_dev(tq_gmodel* m)
{
    return m->x;
}

tq_status tq_gmodel_x_get(tq_gmodel* m, float* host, int T)
{
    CK(cudaMemcpyAsync(host, m->x, (size_t)T * m->hidden * sizeof(float), cudaMemcpyDeviceToHost, m->st));
    CK(cudaStreamSynchronize(m->st));
    return TQ_OK;
}

tq_status tq_gmodel_x_set(tq_gmodel* m, const float* host, int T)
{
    TQ_FORWARD(tq_gmodel_reserve(m, T));
    CK(cudaMemcpyAsync(m->x, host, (size_t)T * m->hidden * sizeof(float), cudaMemcpyHostToDevice, m->st));
    CK(cudaStreamSynchronize(m->st));
    return TQ_OK;
}

tq_status tq_gmodel_sync(tq_gmodel* m)
{
    CK(cudaStreamSynchronize(m->st));
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// forward

/* bf16 copy of x [n] in m->x16 when some weight needs it (bf16 model: bf16 weights, bf16 dequantize scratch);
 * NULL otherwise (fp32 model: packed weights are dequantized into fp32). */
static tq_status cast_in(tq_gmodel* m, const float* x, int64_t n, const uint16_t** out)
{
    *out = NULL;
    if (!m->bf16) return TQ_OK;
    TQ_FORWARD(tq_fwd_to_bf16_cuda(m->st, m->x16, x, n));
    *out = m->x16;
    return TQ_OK;
}

/* y [T x nrows] (row stride ldy) = beta * y + x [T x cols] · W[row0 .. row0 + nrows)ᵀ (a row range: one expert
 * of fused 3-D experts, a chunk of a packed head). */
static tq_status gemm_rows(tq_gmodel* m, float* y, int64_t ldy, const float* x, const uint16_t* x16, const gw* w,
                           int64_t row0, int64_t nrows, int T, float beta)
{
    const void* A = w->p;
    int bf = w->bf16;
    if (A) A = bf ? (const void*)((const uint16_t*)A + row0 * w->cols) : (const void*)((const float*)A + row0 * w->cols);
    if (w->packed) {
        TQ_RETURN_IF((size_t)(nrows * w->cols) > m->wscratch_cap, TQ_ERR_ARG,
                     "internal: GEMM of %lld x %lld packed weights, the dequantize scratch holds %zu values", (long long)nrows,
                     (long long)w->cols, m->wscratch_cap);
        TQ_FORWARD(tq_dequantize_gpu_dev(m->st, &w->q, (const uint8_t* const*)w->dparts, row0, nrows, m->wscratch,
                                         m->bf16 ? TQ_BF16 : TQ_F32, 0));
        A = m->wscratch;
        bf = m->bf16;
    }
    const float alpha = 1.0f;
    const void* B = bf ? (const void*)x16 : (const void*)x;
    TQ_RETURN_IF(bf && !x16, TQ_ERR_ARG, "internal: bf16 GEMM without a bf16 input");
    cudaDataType t = bf ? CUDA_R_16BF : CUDA_R_32F;
    CB(cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nrows, T, (int)w->cols, &alpha, A, t, (int)w->cols, B, t,
                    (int)w->cols, &beta, y, CUDA_R_32F, (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return TQ_OK;
}

/* y [T x rows] = beta * y + x [T x cols] · Wᵀ. */
static tq_status gemm(tq_gmodel* m, float* y, const float* x, const uint16_t* x16, const gw* w, int T, float beta)
{
    return gemm_rows(m, y, w->rows, x, x16, w, 0, w->rows, T, beta);
}

tq_status tq_gmodel_embed(tq_gmodel* m, const int* tokens, int T)
{
    TQ_RETURN_IF((!m->embed.p && !m->embed.packed) || m->l0 != 0, TQ_ERR_ARG, "embedding asked of a model part without layer 0");
    for (int t = 0; t < T; t++)
        TQ_RETURN_IF(tokens[t] < 0 || tokens[t] >= m->vocab, TQ_ERR_ARG,
                     "token %d at index %d is outside the vocabulary (0..%d): wrong token file for this model?", tokens[t], t,
                     m->vocab - 1);
    TQ_FORWARD(tq_gmodel_reserve(m, T));
    if (m->embed.packed) { /* packed embedding: each token's row dequantized (fp32) straight into x */
        for (int t = 0; t < T; t++)
            TQ_FORWARD(tq_dequantize_gpu_dev(m->st, &m->embed.q, (const uint8_t* const*)m->embed.dparts, tokens[t], 1,
                                             m->x + (size_t)t * m->hidden, TQ_F32, 0));
        return TQ_OK;
    }
    CK(cudaMemcpyAsync(m->tok, tokens, (size_t)T * sizeof(int), cudaMemcpyHostToDevice, m->st));
    return tq_fwd_embed_cuda(m->st, m->x, m->embed.p, m->embed.bf16, m->tok, T, m->hidden);
}

/* Router on the host (same top-k and weights as the CPU's moe_ffn), experts on the device. */
static tq_status moe_ffn(tq_gmodel* m, const glayer* L, int T, const float* xb)
{
    const int E = m->E, K = m->K, h = m->hidden, mi = m->mi;
    TQ_FORWARD(gemm(m, m->rl, xb, NULL, &L->router, T, 0.0f));
    CK(cudaMemcpyAsync(m->hrl, m->rl, (size_t)T * E * sizeof(float), cudaMemcpyDeviceToHost, m->st));
    CK(cudaStreamSynchronize(m->st));
    for (int t = 0; t < T; t++) {
        float* lg = m->hrl + (size_t)t * E;
        tq_softmax_ref(lg, E);
        float sum = 0;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= m->hsel[t * K + j] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            m->hsel[t * K + k] = best;
            m->hwsel[t * K + k] = lg[best];
            sum += lg[best];
        }
        if (m->renorm)
            for (int k = 0; k < K; k++) m->hwsel[t * K + k] /= sum;
    }
    /* rows grouped per expert: one upload */
    int* start = calloc((size_t)E + 1, sizeof(int));
    TQ_RETURN_IF(!start, TQ_ERR_NOMEM, "out of memory (MoE)");
    int n = 0;
    for (int e = 0; e < E; e++) {
        start[e] = n;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < K; k++)
                if (m->hsel[t * K + k] == e) {
                    m->hrows[n] = t;
                    m->hw[n] = m->hwsel[t * K + k];
                    n++;
                }
    }
    start[E] = n;
    tq_status rc = TQ_OK;
    cudaError_t ce = cudaMemcpyAsync(m->drows, m->hrows, (size_t)n * sizeof(int), cudaMemcpyHostToDevice, m->st);
    if (ce == cudaSuccess) ce = cudaMemcpyAsync(m->dw, m->hw, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, m->st);
    if (ce != cudaSuccess) rc = tq_fail(TQ_ERR_CUDA, "CUDA copy (MoE routing): %s", cudaGetErrorString(ce));
    for (int e = 0; e < E && rc == TQ_OK; e++) {
        int ne = start[e + 1] - start[e];
        if (!ne) continue;
        const uint16_t* x16 = NULL;
        rc = tq_fwd_gather_rows_cuda(m->st, m->xin, xb, m->drows + start[e], ne, h);
        if (rc == TQ_OK) rc = cast_in(m, m->xin, (int64_t)ne * h, &x16);
        if (L->fused) { /* expert e: gate rows e*2mi.., up rows e*2mi+mi.., down rows e*h.. */
            if (rc == TQ_OK) rc = gemm_rows(m, m->hb, mi, m->xin, x16, &L->fused_gu, (int64_t)e * 2 * mi, mi, ne, 0.0f);
            if (rc == TQ_OK) rc = gemm_rows(m, m->hb2, mi, m->xin, x16, &L->fused_gu, (int64_t)e * 2 * mi + mi, mi, ne, 0.0f);
        } else {
            if (rc == TQ_OK) rc = gemm(m, m->hb, m->xin, x16, &L->e_gate[e], ne, 0.0f);
            if (rc == TQ_OK) rc = gemm(m, m->hb2, m->xin, x16, &L->e_up[e], ne, 0.0f);
        }
        if (rc == TQ_OK) rc = tq_fwd_swiglu_cuda(m->st, m->hb, m->hb2, (int64_t)ne * mi);
        if (rc == TQ_OK) rc = cast_in(m, m->hb, (int64_t)ne * mi, &x16);
        if (L->fused) {
            if (rc == TQ_OK) rc = gemm_rows(m, m->mo, h, m->hb, x16, &L->fused_down, (int64_t)e * h, h, ne, 0.0f);
        } else if (rc == TQ_OK) {
            rc = gemm(m, m->mo, m->hb, x16, &L->e_down[e], ne, 0.0f);
        }
        if (rc == TQ_OK) rc = tq_fwd_scatter_add_cuda(m->st, m->x, m->mo, m->drows + start[e], m->dw + start[e], ne, h);
    }
    if (L->shared && rc == TQ_OK) { /* shared expert, scaled by sigmoid(shared_expert_gate · x) */
        const uint16_t* x16 = NULL;
        const int Is = m->Is;
        rc = gemm(m, m->sw, xb, NULL, &L->s_egate, T, 0.0f);
        if (rc == TQ_OK) rc = cast_in(m, xb, (int64_t)T * h, &x16);
        if (rc == TQ_OK) rc = gemm(m, m->hb, xb, x16, &L->s_gate, T, 0.0f);
        if (rc == TQ_OK) rc = gemm(m, m->hb2, xb, x16, &L->s_up, T, 0.0f);
        if (rc == TQ_OK) rc = tq_fwd_swiglu_cuda(m->st, m->hb, m->hb2, (int64_t)T * Is);
        if (rc == TQ_OK) rc = cast_in(m, m->hb, (int64_t)T * Is, &x16);
        if (rc == TQ_OK) rc = gemm(m, m->mo, m->hb, x16, &L->s_down, T, 0.0f);
        if (rc == TQ_OK) rc = tq_fwd_add_sigmoid_rows_cuda(m->st, m->x, m->mo, m->sw, T, h);
    }
    /* hrows / hw are read by the pending copies: wait before the next layer may overwrite them */
    ce = cudaStreamSynchronize(m->st);
    if (rc == TQ_OK && ce != cudaSuccess) rc = tq_fail(TQ_ERR_CUDA, "CUDA (MoE): %s", cudaGetErrorString(ce));
    free(start);
    return rc;
}

/* Gated DeltaNet layer (pipeline/model.c's lin_attn on the device): x += out_proj(gated norm(delta rule(
 * conv(in_proj(xb))))), with the layer's recurrent state in the GPU cache. */
static tq_status lin_attn_gpu(tq_gmodel* m, const glayer* L, tq_gkv* kv, int li, int T, int pos0)
{
    const int Hk = m->Hk, Hv = m->Hv, dk = m->dk, dv = m->dv, K = m->ck, C = m->conv_dim;
    const int kd = Hk * dk, vd = Hv * dv;
    const uint16_t* x16 = NULL;
    TQ_FORWARD(cast_in(m, m->xb, (int64_t)T * m->hidden, &x16));
    if (m->next_layout) {
        TQ_FORWARD(gemm(m, m->tmp, m->xb, x16, &L->w_qkv, T, 0.0f));
        TQ_FORWARD(tq_fwd_gather_cols_cuda(m->st, m->mix, C, m->tmp, 2 * kd + 2 * vd, m->map_mix, T));
        TQ_FORWARD(tq_fwd_gather_cols_cuda(m->st, m->zz, vd, m->tmp, 2 * kd + 2 * vd, m->map_z, T));
        TQ_FORWARD(gemm(m, m->tmp, m->xb, x16, &L->w_b, T, 0.0f));
        TQ_FORWARD(tq_fwd_gather_cols_cuda(m->st, m->bb, Hv, m->tmp, 2 * Hv, m->map_b, T));
        TQ_FORWARD(tq_fwd_gather_cols_cuda(m->st, m->aa, Hv, m->tmp, 2 * Hv, m->map_a, T));
    } else {
        TQ_FORWARD(gemm(m, m->mix, m->xb, x16, &L->w_qkv, T, 0.0f));
        TQ_FORWARD(gemm(m, m->zz, m->xb, x16, &L->w_z, T, 0.0f));
        TQ_FORWARD(gemm(m, m->bb, m->xb, x16, &L->w_b, T, 0.0f));
        TQ_FORWARD(gemm(m, m->aa, m->xb, x16, &L->w_a, T, 0.0f));
    }
    float* conv_state = kv->lin_state + (size_t)li * kv->lin_floats;
    float* S = conv_state + (size_t)(K - 1) * C;
    if (pos0 == 0) CK(cudaMemsetAsync(conv_state, 0, kv->lin_floats * sizeof(float), m->st)); /* new sequence */
    TQ_FORWARD(tq_dn_conv_silu_cuda(m->st, m->mix, L->conv_w, conv_state, T, C, K));
    TQ_FORWARD(tq_dn_gates_cuda(m->st, m->bb, m->aa, L->A_log, L->dt_bias, T, Hv));
    TQ_FORWARD(tq_dn_l2norm_cuda(m->st, m->mix, C, T, Hk, dk, 1.0f / sqrtf((float)dk)));
    TQ_FORWARD(tq_dn_l2norm_cuda(m->st, m->mix + kd, C, T, Hk, dk, 1.0f));
    TQ_FORWARD(tq_dn_delta_rule_cuda(m->st, m->mix, m->mix + kd, m->mix + 2 * kd, C, m->aa, m->bb, S, T, Hk, Hv, dk, dv,
                                     m->dno));
    TQ_FORWARD(tq_dn_rmsnorm_gated_cuda(m->st, m->dno, m->zz, L->lin_norm, (int64_t)T * Hv, dv, m->eps));
    TQ_FORWARD(cast_in(m, m->dno, (int64_t)T * vd, &x16));
    TQ_FORWARD(gemm(m, m->x, m->dno, x16, &L->w_out, T, 1.0f)); /* residual: x += o · W_outᵀ */
    kv->lin_len[li] += T;
    return TQ_OK;
}

tq_status tq_gmodel_layers(tq_gmodel* m, tq_gkv* kv, int T, int pos0)
{
    if (m->l1 == m->l0 || T <= 0) return TQ_OK;
    TQ_FORWARD(tq_gmodel_reserve(m, T));
    TQ_RETURN_IF(kv->nl != m->n_kv_local || kv->n_lin != m->n_lin_local, TQ_ERR_ARG,
                 "GPU KV cache holds %d full-attention and %d linear-attention layers, the model part %d and %d: create it "
                 "with tq_gmodel_kv_create", kv->nl, kv->n_lin, m->n_kv_local, m->n_lin_local);
    const int h = m->hidden, hd = m->hd, nq = m->nq, nkv = m->nkv, qd = nq * hd, kd = nkv * hd, I = m->I;
    const int half = m->rope.rot_dim / 2;
    for (int t = 0; t < T; t++) /* cos / sin exactly as tq_rope_apply_ref computes them */
        for (int i = 0; i < half; i++) {
            float val = (float)(pos0 + t) * m->rope.inv_freq[i];
            m->hcs[((size_t)t * half + i) * 2] = cosf(val);
            m->hcs[((size_t)t * half + i) * 2 + 1] = sinf(val);
        }
    if (half > 0) CK(cudaMemcpyAsync(m->cs, m->hcs, (size_t)T * half * 2 * sizeof(float), cudaMemcpyHostToDevice, m->st));
    size_t need = tq_fwd_attend_work_bytes(&kv->sh, T, pos0 + T);
    if (need > m->work_cap) {
        CK(cudaStreamSynchronize(m->st));
        if (m->work) cudaFree(m->work);
        m->work = NULL;
        m->work_cap = 0;
        TQ_FORWARD(dmalloc(&m->work, need));
        m->work_cap = need;
    }
    const float scale = 1.0f / sqrtf((float)hd);
    const uint16_t* x16 = NULL;
    for (int l = m->l0; l < m->l1; l++) {
        const glayer* L = &m->layers[l - m->l0];
        if (L->lin) {
            int li = m->lin_index[l - m->l0];
            TQ_RETURN_IF(kv->lin_len[li] != pos0, TQ_ERR_ARG,
                         "GPU recurrent state of layer %d has seen %d tokens but the batch starts at position %d", l,
                         kv->lin_len[li], pos0);
            TQ_FORWARD(tq_fwd_rmsnorm_cuda(m->st, m->xb, m->x, L->attn_norm, T, h, m->eps));
            TQ_FORWARD(lin_attn_gpu(m, L, kv, li, T, pos0));
            goto ffn;
        }
        int ll = m->kv_index[l - m->l0];
        TQ_RETURN_IF(kv->len[ll] != pos0, TQ_ERR_ARG, "GPU KV cache of layer %d holds %d tokens but the batch starts at position %d",
                     l, kv->len[ll], pos0);
        TQ_RETURN_IF(pos0 + T > kv->sh.max_tokens, TQ_ERR_ARG,
                     "GPU KV cache: %d + %d tokens exceed the cache size %d (raise the context)", pos0, T, kv->sh.max_tokens);
        TQ_FORWARD(tq_fwd_rmsnorm_cuda(m->st, m->xb, m->x, L->attn_norm, T, h, m->eps));
        TQ_FORWARD(cast_in(m, m->xb, (int64_t)T * h, &x16));
        if (m->out_gate) { /* q_proj rows per head: [query hd | gate hd] */
            TQ_FORWARD(gemm(m, m->tmp, m->xb, x16, &L->wq, T, 0.0f));
            if (L->bq) TQ_FORWARD(tq_fwd_bias_cuda(m->st, m->tmp, L->bq, T, 2 * qd));
            TQ_FORWARD(tq_fwd_gather_cols_cuda(m->st, m->q, qd, m->tmp, 2 * qd, m->map_q, T));
            TQ_FORWARD(tq_fwd_gather_cols_cuda(m->st, m->gate, qd, m->tmp, 2 * qd, m->map_g, T));
        } else {
            TQ_FORWARD(gemm(m, m->q, m->xb, x16, &L->wq, T, 0.0f));
            if (L->bq) TQ_FORWARD(tq_fwd_bias_cuda(m->st, m->q, L->bq, T, qd));
        }
        TQ_FORWARD(gemm(m, m->k, m->xb, x16, &L->wk, T, 0.0f));
        TQ_FORWARD(gemm(m, m->v, m->xb, x16, &L->wv, T, 0.0f));
        if (L->bq) {
            TQ_FORWARD(tq_fwd_bias_cuda(m->st, m->k, L->bk, T, kd));
            TQ_FORWARD(tq_fwd_bias_cuda(m->st, m->v, L->bv, T, kd));
        }
        if (L->q_norm) {
            TQ_FORWARD(tq_fwd_rmsnorm_cuda(m->st, m->q, m->q, L->q_norm, (int64_t)T * nq, hd, m->eps));
            TQ_FORWARD(tq_fwd_rmsnorm_cuda(m->st, m->k, m->k, L->k_norm, (int64_t)T * nkv, hd, m->eps));
        }
        TQ_FORWARD(tq_fwd_rope_cuda(m->st, m->q, m->cs, T, nq, hd, m->rope.rot_dim));
        TQ_FORWARD(tq_fwd_rope_cuda(m->st, m->k, m->cs, T, nkv, hd, m->rope.rot_dim));
        TQ_FORWARD(tq_fwd_kv_append_cuda(m->st, &kv->side[0][ll], &kv->sh, m->k, T, pos0, kv->rot_scale));
        TQ_FORWARD(tq_fwd_kv_append_cuda(m->st, &kv->side[1][ll], &kv->sh, m->v, T, pos0, kv->rot_scale));
        kv->len[ll] += T;
        const float* qin = m->q;
        if (kv->side[0][ll].kind == TQ_GKV_TQ) {
            TQ_FORWARD(tq_fwd_rotate_q_cuda(m->st, m->qr, m->q, &kv->side[0][ll], &kv->sh, T, kv->rot_scale));
            qin = m->qr;
        }
        TQ_FORWARD(tq_fwd_attend_cuda(m->st, m->att, qin, &kv->side[0][ll], &kv->side[1][ll], &kv->sh, T, pos0, scale,
                                      kv->rot_scale, m->work));
        if (m->out_gate) TQ_FORWARD(tq_fwd_sigmoid_mul_cuda(m->st, m->att, m->gate, (int64_t)T * qd));
        TQ_FORWARD(cast_in(m, m->att, (int64_t)T * qd, &x16));
        TQ_FORWARD(gemm(m, m->x, m->att, x16, &L->wo, T, 1.0f)); /* residual: x += att · Woᵀ */
        if (L->bo) TQ_FORWARD(tq_fwd_bias_cuda(m->st, m->x, L->bo, T, h));
    ffn:
        TQ_FORWARD(tq_fwd_rmsnorm_cuda(m->st, m->xb, m->x, L->ffn_norm, T, h, m->eps));
        if (L->moe) {
            TQ_FORWARD(moe_ffn(m, L, T, m->xb));
        } else {
            TQ_FORWARD(cast_in(m, m->xb, (int64_t)T * h, &x16));
            TQ_FORWARD(gemm(m, m->hb, m->xb, x16, &L->w_gate, T, 0.0f));
            TQ_FORWARD(gemm(m, m->hb2, m->xb, x16, &L->w_up, T, 0.0f));
            TQ_FORWARD(tq_fwd_swiglu_cuda(m->st, m->hb, m->hb2, (int64_t)T * I));
            TQ_FORWARD(cast_in(m, m->hb, (int64_t)T * I, &x16));
            TQ_FORWARD(gemm(m, m->x, m->hb, x16, &L->w_down, T, 1.0f));
        }
    }
    return TQ_OK;
}

tq_status tq_gmodel_head(tq_gmodel* m, int T, float* logits)
{
    TQ_RETURN_IF(!m->final_norm, TQ_ERR_ARG, "output head asked of a model part without the last layer");
    const gw* hw = m->head_is_embed ? &m->embed : &m->head;
    size_t need = (size_t)T * m->vocab;
    if (need > m->logits_cap) {
        CK(cudaStreamSynchronize(m->st));
        if (m->logits) cudaFree(m->logits);
        m->logits = NULL;
        m->logits_cap = 0;
        TQ_FORWARD(dmalloc((void**)&m->logits, need * sizeof(float)));
        m->logits_cap = need;
    }
    TQ_FORWARD(tq_fwd_rmsnorm_cuda(m->st, m->x, m->x, m->final_norm, T, m->hidden, m->eps));
    const uint16_t* x16 = NULL;
    if (hw->bf16 || (hw->packed && m->bf16)) {
        TQ_FORWARD(tq_fwd_to_bf16_cuda(m->st, m->x16, m->x, (int64_t)T * m->hidden));
        x16 = m->x16;
    }
    if (hw->packed) { /* row chunks of the vocabulary, each dequantized into the scratch */
        for (int64_t r0 = 0; r0 < m->vocab; r0 += m->head_rows) {
            int64_t nr = m->vocab - r0 < m->head_rows ? m->vocab - r0 : m->head_rows;
            TQ_FORWARD(gemm_rows(m, m->logits + r0, m->vocab, m->x, x16, hw, r0, nr, T, 0.0f));
        }
    } else {
        TQ_FORWARD(gemm(m, m->logits, m->x, x16, hw, T, 0.0f));
    }
    CK(cudaMemcpyAsync(logits, m->logits, need * sizeof(float), cudaMemcpyDeviceToHost, m->st));
    CK(cudaStreamSynchronize(m->st));
    return TQ_OK;
}

tq_status tq_gmodel_forward(tq_gmodel* m, tq_gkv* kv, const int* tokens, int T, int pos0, float* logits)
{
    TQ_FORWARD(tq_gmodel_embed(m, tokens, T));
    TQ_FORWARD(tq_gmodel_layers(m, kv, T, pos0));
    return tq_gmodel_head(m, T, logits);
}

// ------------------------------------------------------------------------------------------------
// KV cache

/* Must stay equal to key4() of kernels/kvcache_ref.c: the rotation signs of (K/V, global layer, head). */
static uint64_t kv_key4(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
    return tq_mix64(tq_mix64(tq_mix64(seed ^ 0x6b76636163686521ull) ^ a) ^ (b << 20) ^ c);
}

static int gkv_kind(const tq_kv_codec* c)
{
    switch (c->kind) {
    case TQ_KV_F32: return TQ_GKV_F32;
    case TQ_KV_FP16: return TQ_GKV_FP16;
    case TQ_KV_BF16: return TQ_GKV_BF16;
    case TQ_KV_INT8: return TQ_GKV_INT8;
    default: return TQ_GKV_TQ;
    }
}

static size_t round4(size_t n)
{
    return (n + 3) & ~(size_t)3;
}

tq_status tq_gmodel_kv_create(const tq_gmodel* m, const tq_kv_codec* kc, const tq_kv_codec* vc, int max_tokens, uint64_t seed,
                              tq_gkv** out)
{
    *out = NULL;
    char why[256];
    TQ_RETURN_IF(!tq_gmodel_supports(m->arch, kc, vc, why, sizeof why), TQ_ERR_UNSUPPORTED, "GPU KV cache: %s", why);
    TQ_RETURN_IF(max_tokens <= 0, TQ_ERR_ARG, "GPU KV cache: %d tokens", max_tokens);
    tq_gkv* k = calloc(1, sizeof *k);
    TQ_RETURN_IF(!k, TQ_ERR_NOMEM, "out of memory");
    tq_status rc = TQ_OK;
    const int nl = m->n_kv_local, d = m->hd, nkv = m->nkv;
    k->nl = nl;
    k->n_lin = m->n_lin_local;
    if (k->n_lin > 0) { /* recurrent state of the linear-attention layers, zeroed (a new sequence) */
        k->lin_floats = (size_t)(m->ck - 1) * m->conv_dim + (size_t)m->Hv * m->dk * m->dv;
        k->lin_len = calloc((size_t)k->n_lin, sizeof(int));
        TQ_GOTO_FAIL(!k->lin_len, TQ_ERR_NOMEM, fail, "out of memory");
        TQ_CHECK_GOTO(dmalloc((void**)&k->lin_state, (size_t)k->n_lin * k->lin_floats * sizeof(float)), fail);
        TQ_GOTO_FAIL(cudaMemset(k->lin_state, 0, (size_t)k->n_lin * k->lin_floats * sizeof(float)) != cudaSuccess ||
                         cudaDeviceSynchronize() != cudaSuccess,
                     TQ_ERR_CUDA, fail, "CUDA memset (recurrent state) failed");
    }
    k->dev = m->dev;
    k->sh.nkv = nkv;
    k->sh.nh = m->nq;
    k->sh.d = d;
    k->sh.max_tokens = max_tokens;
    k->rot_scale = 1.0f / sqrtf((float)d);
    k->len = calloc((size_t)(nl > 0 ? nl : 1), sizeof(int));
    TQ_GOTO_FAIL(!k->len, TQ_ERR_NOMEM, fail, "out of memory");
    const tq_kv_codec* cs[2] = {kc, vc};
    for (int w = 0; w < 2; w++) {
        const tq_kv_codec* c = cs[w];
        int kind = gkv_kind(c);
        size_t stride = kind == TQ_GKV_F32 ? 4 * (size_t)d : kind == TQ_GKV_INT8 ? round4((size_t)d)
                      : kind == TQ_GKV_TQ ? round4(((size_t)d * c->bits + 7) / 8) : 2 * (size_t)d;
        k->stride[w] = stride;
        k->vb[w] = tq_kv_vec_bytes(c, d);
        size_t nvec = (size_t)(nl > 0 ? nl : 1) * nkv * max_tokens;
        TQ_CHECK_GOTO(dmalloc((void**)&k->data[w], nvec * stride), fail);
        if (kind == TQ_GKV_INT8 || kind == TQ_GKV_TQ) TQ_CHECK_GOTO(dmalloc((void**)&k->norms[w], nvec * sizeof(uint16_t)), fail);
        k->side[w] = calloc((size_t)(nl > 0 ? nl : 1), sizeof(tq_gkv_side));
        TQ_GOTO_FAIL(!k->side[w], TQ_ERR_NOMEM, fail, "out of memory");
        if (kind == TQ_GKV_TQ) {
            float cb[16], bnd[16];
            int nc = 1 << c->bits;
            TQ_CHECK_GOTO(tq_lloydmax_unit_f32(TQ_LAW_BETA, d, c->bits, cb), fail);
            for (int i = 0; i + 1 < nc; i++) bnd[i] = 0.5f * (cb[i] + cb[i + 1]);
            TQ_CHECK_GOTO(dmalloc((void**)&k->cb[w], sizeof cb), fail);
            TQ_CHECK_GOTO(dmalloc((void**)&k->bnd[w], sizeof bnd), fail);
            cudaMemcpy(k->cb[w], cb, sizeof cb, cudaMemcpyHostToDevice);
            cudaMemcpy(k->bnd[w], bnd, sizeof bnd, cudaMemcpyHostToDevice);
            size_t ns = (size_t)(nl > 0 ? nl : 1) * nkv * d;
            float* hs = malloc(ns * sizeof(float));
            TQ_GOTO_FAIL(!hs, TQ_ERR_NOMEM, fail, "out of memory");
            for (int l = 0; l < nl; l++)
                for (int hh = 0; hh < nkv; hh++)
                    for (int j = 0; j < d; j++)
                        hs[((size_t)l * nkv + hh) * d + j] =
                            tq_rot_sign(kv_key4(seed, (uint64_t)w, (uint64_t)(m->kv_offset + l), (uint64_t)hh), j);
            rc = dmalloc((void**)&k->sign[w], ns * sizeof(float));
            if (rc == TQ_OK && cudaMemcpy(k->sign[w], hs, ns * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
                rc = tq_fail(TQ_ERR_CUDA, "CUDA copy (KV signs) failed");
            free(hs);
            if (rc != TQ_OK) goto fail;
        }
        for (int l = 0; l < nl; l++) {
            tq_gkv_side* s = &k->side[w][l];
            s->kind = kind;
            s->bits = c->bits;
            s->norm_fix = c->norm_fix;
            s->stride = (int)stride;
            s->data = k->data[w] + (size_t)l * nkv * max_tokens * stride;
            s->norms = k->norms[w] ? k->norms[w] + (size_t)l * nkv * max_tokens : NULL;
            s->sign = k->sign[w] ? k->sign[w] + (size_t)l * nkv * d : NULL;
            s->cb = k->cb[w];
            s->bnd = k->bnd[w];
        }
    }
    *out = k;
    return TQ_OK;
fail:
    tq_gkv_free(&k);
    return rc;
}

void tq_gkv_free(tq_gkv** pk)
{
    if (!pk || !*pk) return;
    tq_gkv* k = *pk;
    for (int w = 0; w < 2; w++) {
        if (k->data[w]) cudaFree(k->data[w]);
        if (k->norms[w]) cudaFree(k->norms[w]);
        if (k->sign[w]) cudaFree(k->sign[w]);
        if (k->cb[w]) cudaFree(k->cb[w]);
        if (k->bnd[w]) cudaFree(k->bnd[w]);
        free(k->side[w]);
    }
    free(k->len);
    free(k->lin_len);
    if (k->lin_state) cudaFree(k->lin_state);
    free(k);
    *pk = NULL;
}

void tq_gkv_reset(tq_gkv* k)
{
    for (int l = 0; l < k->nl; l++) k->len[l] = 0;
    for (int l = 0; l < k->n_lin; l++) k->lin_len[l] = 0; /* the state is zeroed by the next batch at position 0 */
}

size_t tq_gkv_bytes_per_token(const tq_gkv* k)
{
    return (size_t)k->nl * k->sh.nkv * (k->vb[0] + k->vb[1]);
}

size_t tq_gkv_device_bytes_per_token(const tq_gkv* k)
{
    size_t per = 0;
    for (int w = 0; w < 2; w++) per += k->stride[w] + (k->norms[w] ? 2 : 0);
    return (size_t)k->nl * k->sh.nkv * per;
}

tq_status tq_gkv_bench_fill(tq_gkv* k, int n)
{
    TQ_RETURN_IF(n < 0 || n > k->sh.max_tokens, TQ_ERR_ARG, "bench fill: %d tokens, cache holds %d", n, k->sh.max_tokens);
    size_t nvec = (size_t)(k->nl > 0 ? k->nl : 1) * k->sh.nkv * k->sh.max_tokens;
    for (int w = 0; w < 2; w++) {
        CK(cudaMemset(k->data[w], 0x11, nvec * k->stride[w]));
        if (k->norms[w]) CK(cudaMemset(k->norms[w], 0x11, nvec * sizeof(uint16_t)));
    }
    if (k->lin_state) CK(cudaMemset(k->lin_state, 0, (size_t)k->n_lin * k->lin_floats * sizeof(float)));
    CK(cudaDeviceSynchronize());
    for (int l = 0; l < k->nl; l++) k->len[l] = n;
    for (int l = 0; l < k->n_lin; l++) k->lin_len[l] = n;
    return TQ_OK;
}

#endif /* TQ_HAVE_CUDA */
