/* forward_gpu.cu — CUDA kernels of the GPU forward pass (see kernels/forward_gpu.h): elementwise ops,
 * RMSNorm, RoPE, the MoE row gather / scatter, and the KV cache (encode on append, causal attention
 * over the packed cache).
 *
 * Attention is split over the key positions ("flash decoding"): a block handles one query token, one KV
 * head, up to ATT_G query heads of its group and one chunk of positions, in tiles of ATT_TILE positions
 * with a running (online) softmax; scores are one thread per position (the packed row is read by that
 * thread, so any head_dim and bit width work), values one thread per output dimension. A second kernel
 * merges the chunks' partial sums and, for tq values, rotates the accumulated rotated-domain vector back.
 * Precision: fp32 throughout; exp is the fast-math __expf (about 2 ulp), RMSNorm and the tq encoder use
 * IEEE division / square root (kernels/gpu_common.cuh) so codes match the CPU reference except where a
 * value sits within rounding of a decision boundary. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

extern "C" {
#include "forward_gpu.h"
#include "status.h"
}
#include "gpu_common.cuh" /* defines: CUDA_CHECK, tq_fdiv, tq_f32_to_f16_d, tq_f32_to_bf16_d */

#define ATT_NT 128   /* threads per attention block */
#define ATT_TILE 128 /* positions per tile (one per thread in the scoring phase) */
#define ATT_G 8      /* most query heads per block (template G: 2 or 8) */
#define ATT_MAXD 256 /* largest head_dim */

static tq_status launch_check(const char* what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return tq_fail(TQ_ERR_CUDA, "CUDA kernel %s failed to launch: %s", what, cudaGetErrorString(e));
    return TQ_OK;
}

static inline int blocks_for(int64_t n, int nt)
{
    int64_t b = (n + nt - 1) / nt;
    return (int)(b > 65535 * 16 ? 65535 * 16 : b);
}

// ------------------------------------------------------------------------------------------------
// elementwise

__global__ void embed_kernel(float* x, const void* emb, int bf16, const int* tok, int T, int h)
{
    int t = blockIdx.x;
    const int64_t row = (int64_t)tok[t] * h;
    for (int j = threadIdx.x; j < h; j += blockDim.x) {
        float v = bf16 ? tq_bf16_to_f32_d(((const uint16_t*)emb)[row + j]) : ((const float*)emb)[row + j];
        x[(int64_t)t * h + j] = v;
    }
}

extern "C" tq_status tq_fwd_embed_cuda(void* stream, float* x, const void* emb, int bf16, const int* d_tok, int T, int hidden)
{
    if (T <= 0) return TQ_OK;
    embed_kernel<<<T, 256, 0, (cudaStream_t)stream>>>(x, emb, bf16, d_tok, T, hidden);
    return launch_check("embed");
}

__global__ void rmsnorm_kernel(float* out, const float* x, const float* w, int n, float eps)
{
    const int64_t r = blockIdx.x;
    const float* xr = x + r * n;
    float* o = out + r * n;
    __shared__ float red[32];
    float ss = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) ss += xr[j] * xr[j];
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (threadIdx.x == 0) red[0] = v;
    }
    __syncthreads();
    float s = tq_fdiv(red[0], (float)n);
    s = tq_fadd(s, eps);
    s = tq_fdiv(1.0f, __fsqrt_rn(s));
    __syncthreads(); /* everyone has read red[0] before an aliasing write could matter (out may be x) */
    for (int j = threadIdx.x; j < n; j += blockDim.x) o[j] = w[j] * (s * xr[j]);
}

extern "C" tq_status tq_fwd_rmsnorm_cuda(void* stream, float* out, const float* x, const float* w, int64_t rows, int n, float eps)
{
    if (rows <= 0) return TQ_OK;
    int nt = n >= 1024 ? 256 : n >= 128 ? 128 : 32;
    for (int64_t r0 = 0; r0 < rows; r0 += 1 << 30) {
        int64_t nr = rows - r0 < (1 << 30) ? rows - r0 : (1 << 30);
        rmsnorm_kernel<<<(unsigned)nr, nt, 0, (cudaStream_t)stream>>>(out + r0 * n, x + r0 * n, w, n, eps);
    }
    return launch_check("rmsnorm");
}

__global__ void rope_kernel(float* x, const float* cs, int nheads, int hd, int half)
{
    const int t = blockIdx.x;
    for (int idx = threadIdx.x; idx < nheads * half; idx += blockDim.x) {
        int h = idx / half, i = idx % half;
        float c = cs[((int64_t)t * half + i) * 2], s = cs[((int64_t)t * half + i) * 2 + 1];
        float* v = x + ((int64_t)t * nheads + h) * hd;
        float a = v[i], b = v[i + half];
        v[i] = tq_fsub(tq_fmul(a, c), tq_fmul(b, s));
        v[i + half] = tq_fadd(tq_fmul(b, c), tq_fmul(a, s));
    }
}

extern "C" tq_status tq_fwd_rope_cuda(void* stream, float* x, const float* cs, int T, int nheads, int hd, int rot)
{
    if (T <= 0 || rot <= 0) return TQ_OK;
    rope_kernel<<<T, 128, 0, (cudaStream_t)stream>>>(x, cs, nheads, hd, rot / 2);
    return launch_check("rope");
}

__global__ void swiglu_kernel(float* g, const float* u, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v = g[i];
        v *= 1.0f / (1.0f + __expf(-v));
        g[i] = v * u[i];
    }
}

extern "C" tq_status tq_fwd_swiglu_cuda(void* stream, float* g, const float* u, int64_t n)
{
    if (n <= 0) return TQ_OK;
    swiglu_kernel<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(g, u, n);
    return launch_check("swiglu");
}

__global__ void bias_kernel(float* y, const float* b, int T, int n)
{
    const int64_t total = (int64_t)T * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += b[i % n];
}

extern "C" tq_status tq_fwd_bias_cuda(void* stream, float* y, const float* b, int T, int n)
{
    if (T <= 0 || !b) return TQ_OK;
    bias_kernel<<<blocks_for((int64_t)T * n, 256), 256, 0, (cudaStream_t)stream>>>(y, b, T, n);
    return launch_check("bias");
}

__global__ void add_kernel(float* y, const float* a, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] += a[i];
}

extern "C" tq_status tq_fwd_add_cuda(void* stream, float* y, const float* a, int64_t n)
{
    if (n <= 0) return TQ_OK;
    add_kernel<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(y, a, n);
    return launch_check("add");
}

__global__ void to_bf16_kernel(uint32_t* dst, const float* src, int64_t n2)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n2; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = tq_f32x2_to_bf16x2_d(src[2 * i], src[2 * i + 1]);
}

__global__ void to_bf16_tail_kernel(uint16_t* dst, const float* src, int64_t i)
{
    dst[i] = tq_f32_to_bf16_d(src[i]);
}

extern "C" tq_status tq_fwd_to_bf16_cuda(void* stream, uint16_t* dst, const float* src, int64_t n)
{
    if (n <= 0) return TQ_OK;
    /* dst is 4-byte aligned (cudaMalloc'd buffers, even offsets) */
    int64_t n2 = n / 2;
    if (n2) to_bf16_kernel<<<blocks_for(n2, 256), 256, 0, (cudaStream_t)stream>>>((uint32_t*)dst, src, n2);
    if (n & 1) to_bf16_tail_kernel<<<1, 1, 0, (cudaStream_t)stream>>>(dst, src, n - 1);
    return launch_check("to_bf16");
}

__global__ void gather_rows_kernel(float* dst, const float* src, const int* rows, int h)
{
    const int i = blockIdx.x;
    const float* s = src + (int64_t)rows[i] * h;
    for (int j = threadIdx.x; j < h; j += blockDim.x) dst[(int64_t)i * h + j] = s[j];
}

extern "C" tq_status tq_fwd_gather_rows_cuda(void* stream, float* dst, const float* src, const int* rows, int n, int h)
{
    if (n <= 0) return TQ_OK;
    gather_rows_kernel<<<n, 256, 0, (cudaStream_t)stream>>>(dst, src, rows, h);
    return launch_check("gather_rows");
}

__global__ void scatter_add_kernel(float* x, const float* o, const int* rows, const float* w, int h)
{
    const int i = blockIdx.x;
    float* d = x + (int64_t)rows[i] * h;
    const float wi = w[i];
    for (int j = threadIdx.x; j < h; j += blockDim.x) d[j] += wi * o[(int64_t)i * h + j];
}

extern "C" tq_status tq_fwd_scatter_add_cuda(void* stream, float* x, const float* o, const int* rows, const float* w, int n, int h)
{
    if (n <= 0) return TQ_OK;
    scatter_add_kernel<<<n, 256, 0, (cudaStream_t)stream>>>(x, o, rows, w, h);
    return launch_check("scatter_add");
}

// ------------------------------------------------------------------------------------------------
// hybrid families (helper "gpuhybrid"): column gathers, sigmoid gates

__global__ void gather_cols_kernel(float* dst, int n, const float* src, int ld, const int* map)
{
    const int t = blockIdx.x;
    for (int j = threadIdx.x; j < n; j += blockDim.x) dst[(int64_t)t * n + j] = src[(int64_t)t * ld + map[j]];
}

extern "C" tq_status tq_fwd_gather_cols_cuda(void* stream, float* dst, int n, const float* src, int ld, const int* map, int T)
{
    if (T <= 0 || n <= 0) return TQ_OK;
    gather_cols_kernel<<<T, 256, 0, (cudaStream_t)stream>>>(dst, n, src, ld, map);
    return launch_check("gather_cols");
}

__global__ void sigmoid_mul_kernel(float* y, const float* gate, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = tq_fmul(y[i], tq_fdiv(1.0f, tq_fadd(1.0f, expf(-gate[i]))));
}

extern "C" tq_status tq_fwd_sigmoid_mul_cuda(void* stream, float* y, const float* gate, int64_t n)
{
    if (n <= 0) return TQ_OK;
    sigmoid_mul_kernel<<<blocks_for(n, 256), 256, 0, (cudaStream_t)stream>>>(y, gate, n);
    return launch_check("sigmoid_mul");
}

__global__ void add_sigmoid_rows_kernel(float* x, const float* o, const float* s, int h)
{
    const int t = blockIdx.x;
    const float g = tq_fdiv(1.0f, tq_fadd(1.0f, expf(-s[t])));
    for (int j = threadIdx.x; j < h; j += blockDim.x) x[(int64_t)t * h + j] = tq_fadd(x[(int64_t)t * h + j], tq_fmul(g, o[(int64_t)t * h + j]));
}

extern "C" tq_status tq_fwd_add_sigmoid_rows_cuda(void* stream, float* x, const float* o, const float* s, int T, int h)
{
    if (T <= 0) return TQ_OK;
    add_sigmoid_rows_kernel<<<T, 256, 0, (cudaStream_t)stream>>>(x, o, s, h);
    return launch_check("add_sigmoid_rows");
}

// ------------------------------------------------------------------------------------------------
// KV cache: encode

/* In-place unnormalized Walsh–Hadamard transform of y[0..n) in shared memory, stage by stage (the same
 * additions in the same order per element as tq_fwht). Every thread of the block must call it. */
__device__ void fwht_shared(float* y, int n)
{
    for (int h = 1; h < n; h <<= 1) {
        for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
            int j = (i / h) * 2 * h + (i % h);
            float a = y[j], b = y[j + h];
            y[j] = tq_fadd(a, b);
            y[j + h] = tq_fsub(a, b);
        }
        __syncthreads();
    }
}

__device__ __forceinline__ int nearest_d(const float* bnd, int k, float v)
{
    int lo = 0, hi = k - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (tq_flt(v, bnd[mid]))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* grid (T, nkv), block ATT_NT threads; one vector per block. */
__global__ void kv_append_kernel(tq_gkv_side s, tq_gkv_shape sh, const float* src, int len, float rot_scale)
{
    const int t = blockIdx.x, g = blockIdx.y, d = sh.d;
    const float* x = src + ((int64_t)t * sh.nkv + g) * d;
    const int64_t vi = (int64_t)g * sh.max_tokens + len + t;
    uint8_t* row = s.data + vi * s.stride;
    __shared__ float y[ATT_MAXD];
    __shared__ double red[ATT_NT];
    __shared__ uint32_t words[ATT_MAXD / 2 + 1];
    switch (s.kind) {
    case TQ_GKV_F32:
        for (int j = threadIdx.x; j < d; j += blockDim.x) ((float*)row)[j] = x[j];
        return;
    case TQ_GKV_FP16:
        for (int j = threadIdx.x; j < d; j += blockDim.x) ((uint16_t*)row)[j] = tq_f32_to_f16_d(x[j]);
        return;
    case TQ_GKV_BF16:
        for (int j = threadIdx.x; j < d; j += blockDim.x) ((uint16_t*)row)[j] = tq_f32_to_bf16_d(x[j]);
        return;
    case TQ_GKV_INT8: {
        float am = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x) am = fmaxf(am, fabsf(x[j]));
        red[threadIdx.x] = am;
        __syncthreads();
        if (threadIdx.x == 0) {
            float m = 0.0f;
            for (int i = 0; i < (int)blockDim.x; i++) m = fmaxf(m, (float)red[i]);
            red[0] = m;
        }
        __syncthreads();
        uint16_t hs = tq_f32_to_f16_d(tq_fdiv((float)red[0], 127.0f));
        float sc = tq_f16_to_f32_d(hs);
        if (threadIdx.x == 0) s.norms[vi] = hs;
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            float q = sc > 0 ? roundf(tq_fdiv(x[j], sc)) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
            row[j] = (uint8_t)(int8_t)q;
        }
        return;
    }
    default: break;
    }
    /* tq: rotate, norm, nearest centroid, pack */
    const float* sign = s.sign + (int64_t)g * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) y[j] = tq_fmul(sign[j], x[j]);
    const int nw = s.stride / 4;
    for (int i = threadIdx.x; i < nw; i += blockDim.x) words[i] = 0;
    __syncthreads();
    fwht_shared(y, d);
    double ss = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        y[j] = tq_fmul(y[j], rot_scale);
        ss += (double)y[j] * (double)y[j];
    }
    red[threadIdx.x] = ss;
    __syncthreads();
    if (threadIdx.x == 0) { /* sequential like the CPU (d <= 256 values) */
        double a = 0;
        for (int i = 0; i < (int)blockDim.x; i++) a += red[i];
        red[0] = a;
    }
    __syncthreads();
    const float nrm = tq_d2f(sqrt(red[0]));
    const float inv = nrm > 0 ? tq_fdiv(1.0f, nrm) : 0.0f;
    const int b = s.bits, k = 1 << b;
    __syncthreads();
    double cc = 0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        int code = nearest_d(s.bnd, k, tq_fmul(y[j], inv));
        double cv = s.cb[code];
        cc += cv * cv;
        int bit = j * b;
        atomicOr(&words[bit >> 5], (uint32_t)code << (bit & 31));
        if ((bit & 31) + b > 32) atomicOr(&words[(bit >> 5) + 1], (uint32_t)code >> (32 - (bit & 31)));
    }
    red[threadIdx.x] = cc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double a = 0;
        for (int i = 0; i < (int)blockDim.x; i++) a += red[i];
        float scale = nrm;
        if (s.norm_fix && a > 0) scale = tq_d2f((double)nrm / sqrt(a));
        s.norms[vi] = tq_f32_to_f16_d(scale);
    }
    for (int i = threadIdx.x; i < nw; i += blockDim.x) ((uint32_t*)row)[i] = words[i];
}

extern "C" tq_status tq_fwd_kv_append_cuda(void* stream, const tq_gkv_side* s, const tq_gkv_shape* sh, const float* src,
                                           int T, int len, float rot_scale)
{
    if (T <= 0) return TQ_OK;
    dim3 grid((unsigned)T, (unsigned)sh->nkv);
    kv_append_kernel<<<grid, ATT_NT, 0, (cudaStream_t)stream>>>(*s, *sh, src, len, rot_scale);
    return launch_check("kv_append");
}

/* grid (T, nh): qr = H·D_g·q / sqrt(d). */
__global__ void rotate_q_kernel(float* qr, const float* q, const float* sign, int nh, int grp, int d, float rot_scale)
{
    const int t = blockIdx.x, hq = blockIdx.y, g = hq / grp;
    __shared__ float y[ATT_MAXD];
    const float* src = q + ((int64_t)t * nh + hq) * d;
    const float* sg = sign + (int64_t)g * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) y[j] = tq_fmul(sg[j], src[j]);
    __syncthreads();
    fwht_shared(y, d);
    for (int j = threadIdx.x; j < d; j += blockDim.x) qr[((int64_t)t * nh + hq) * d + j] = tq_fmul(y[j], rot_scale);
}

extern "C" tq_status tq_fwd_rotate_q_cuda(void* stream, float* qr, const float* q, const tq_gkv_side* k, const tq_gkv_shape* sh,
                                          int T, float rot_scale)
{
    if (T <= 0) return TQ_OK;
    dim3 grid((unsigned)T, (unsigned)sh->nh);
    rotate_q_kernel<<<grid, 128, 0, (cudaStream_t)stream>>>(qr, q, k->sign, sh->nh, sh->nh / sh->nkv, sh->d, rot_scale);
    return launch_check("rotate_q");
}

// ------------------------------------------------------------------------------------------------
// KV cache: attention

/* Element j of a plain-coded row. */
template <int KIND>
__device__ __forceinline__ float plain_elem(const uint8_t* row, int j, float scale)
{
    if (KIND == TQ_GKV_F32) return ((const float*)row)[j];
    if (KIND == TQ_GKV_FP16) return tq_f16_to_f32_d(((const uint16_t*)row)[j]);
    if (KIND == TQ_GKV_BF16) return tq_bf16_to_f32_d(((const uint16_t*)row)[j]);
    return scale * (float)(int8_t)row[j]; /* int8 */
}

/* Code j (b bits, LSB-first) of a 4-byte aligned tq row. */
__device__ __forceinline__ int tq_code(const uint8_t* row, int j, int b)
{
    const uint32_t* w = (const uint32_t*)row;
    int bit = j * b, wi = bit >> 5, sh = bit & 31;
    uint32_t v = w[wi] >> sh;
    if (sh + b > 32) v |= w[wi + 1] << (32 - sh);
    return (int)(v & ((1u << b) - 1u));
}

template <int KK, int VK, int G>
__global__ void __launch_bounds__(ATT_NT) attend_kernel(const float* q, tq_gkv_side ks, tq_gkv_side vs, tq_gkv_shape sh,
                                                        int pos0, int chunk, int nchunks, int ngi, float scale,
                                                        float* pm, float* pl, float* pacc)
{
    const int c = blockIdx.x, t = blockIdx.y;
    const int g = blockIdx.z / ngi, gi = blockIdx.z % ngi;
    const int d = sh.d, nh = sh.nh, grp = nh / sh.nkv;
    const int h0 = gi * G;
    const int nhb = grp - h0 < G ? grp - h0 : G;
    const int P = pos0 + t + 1;
    const int start = c * chunk;
    const int end = start + chunk < P ? start + chunk : P;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    __shared__ float qs[G][ATT_MAXD];
    __shared__ float sc[G][ATT_TILE];
    __shared__ float m_run[G], l_run[G], corr[G];
    __shared__ float cbk[16], cbv[16];

    for (int i = tid; i < G * d; i += ATT_NT) {
        int hh = i / d, j = i % d;
        qs[hh][j] = hh < nhb ? q[((int64_t)t * nh + g * grp + h0 + hh) * d + j] : 0.0f;
    }
    if (KK == TQ_GKV_TQ && tid < (1 << ks.bits)) cbk[tid] = ks.cb[tid];
    if (VK == TQ_GKV_TQ && tid < (1 << vs.bits)) cbv[tid] = vs.cb[tid];
    if (tid < G) {
        m_run[tid] = -INFINITY;
        l_run[tid] = 0.0f;
        corr[tid] = 0.0f;
    }
    float acc0[G], acc1[G];
#pragma unroll
    for (int hh = 0; hh < G; hh++) acc0[hh] = acc1[hh] = 0.0f;
    __syncthreads();

    const int64_t base = (int64_t)g * sh.max_tokens;
    for (int t0 = start; t0 < end; t0 += ATT_TILE) {
        const int ntile = end - t0 < ATT_TILE ? end - t0 : ATT_TILE;
        /* ---- scores: one thread per position */
        {
            const int p = t0 + tid;
            float s[G];
#pragma unroll
            for (int hh = 0; hh < G; hh++) s[hh] = 0.0f;
            if (tid < ntile) {
                const uint8_t* row = ks.data + (base + p) * ks.stride;
                if (KK == TQ_GKV_TQ) {
                    const uint32_t* w = (const uint32_t*)row;
                    const int b = ks.bits;
                    const uint32_t mask = (1u << b) - 1u;
                    uint64_t buf = 0;
                    int nb = 0, wi = 0;
                    for (int j = 0; j < d; j++) {
                        if (nb < b) {
                            buf |= (uint64_t)__ldg(w + wi++) << nb;
                            nb += 32;
                        }
                        float cv = cbk[buf & mask];
                        buf >>= b;
                        nb -= b;
#pragma unroll
                        for (int hh = 0; hh < G; hh++) s[hh] += qs[hh][j] * cv;
                    }
                    float nrm = tq_f16_to_f32_d(ks.norms[base + p]);
#pragma unroll
                    for (int hh = 0; hh < G; hh++) s[hh] *= nrm;
                } else {
                    float scl = KK == TQ_GKV_INT8 ? tq_f16_to_f32_d(ks.norms[base + p]) : 1.0f;
                    for (int j = 0; j < d; j++) {
                        float kv = plain_elem<KK>(row, j, scl);
#pragma unroll
                        for (int hh = 0; hh < G; hh++) s[hh] += qs[hh][j] * kv;
                    }
                }
            }
#pragma unroll
            for (int hh = 0; hh < G; hh++) sc[hh][tid] = tid < ntile ? s[hh] * scale : -INFINITY;
        }
        __syncthreads();
        /* ---- online softmax: warp w handles heads w, w + 4, ... */
        for (int hh = warp; hh < nhb; hh += ATT_NT / 32) {
            float mx = -INFINITY;
            for (int i = lane; i < ATT_TILE; i += 32) mx = fmaxf(mx, sc[hh][i]);
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float mold = m_run[hh];
            const float mnew = fmaxf(mold, mx);
            float sum = 0.0f;
            for (int i = lane; i < ATT_TILE; i += 32) {
                float e = i < ntile ? __expf(sc[hh][i] - mnew) : 0.0f;
                sc[hh][i] = e;
                sum += e;
            }
            for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            if (lane == 0) {
                float cf = mold == -INFINITY ? 0.0f : __expf(mold - mnew);
                corr[hh] = cf;
                l_run[hh] = l_run[hh] * cf + sum;
                m_run[hh] = mnew;
            }
        }
        __syncthreads();
        /* ---- values: one thread per dimension (two when d > ATT_NT) */
        for (int half = 0; half < 2; half++) {
            const int j = tid + half * ATT_NT;
            if (j >= d) break;
            float* acc = half ? acc1 : acc0;
#pragma unroll
            for (int hh = 0; hh < G; hh++) acc[hh] *= corr[hh];
            for (int pp = 0; pp < ntile; pp++) {
                const int64_t vi = base + t0 + pp;
                const uint8_t* row = vs.data + vi * vs.stride;
                float vv;
                if (VK == TQ_GKV_TQ)
                    vv = tq_f16_to_f32_d(vs.norms[vi]) * cbv[tq_code(row, j, vs.bits)];
                else
                    vv = plain_elem<VK>(row, j, VK == TQ_GKV_INT8 ? tq_f16_to_f32_d(vs.norms[vi]) : 1.0f);
#pragma unroll
                for (int hh = 0; hh < G; hh++) acc[hh] += sc[hh][pp] * vv;
            }
        }
        __syncthreads();
    }
    /* ---- partial results of this chunk */
    for (int hh = 0; hh < nhb; hh++) {
        const int hq = g * grp + h0 + hh;
        const int64_t pi = ((int64_t)t * nh + hq) * nchunks + c;
        if (tid == 0) {
            pm[pi] = m_run[hh];
            pl[pi] = l_run[hh];
        }
        if (tid < d) pacc[pi * d + tid] = acc0[hh];
        if (tid + ATT_NT < d) pacc[pi * d + tid + ATT_NT] = acc1[hh];
    }
}

/* grid (T, nh), block 128: merge the chunks, normalise, rotate tq values back. */
__global__ void attend_combine_kernel(float* out, const float* pm, const float* pl, const float* pacc, int nh, int d,
                                      int nchunks, int grp, const float* vsign, float rot_scale)
{
    const int t = blockIdx.x, hq = blockIdx.y;
    const int64_t pi0 = ((int64_t)t * nh + hq) * nchunks;
    __shared__ float y[ATT_MAXD];
    float M = -INFINITY;
    for (int c = 0; c < nchunks; c++) M = fmaxf(M, pm[pi0 + c]);
    float L = 0.0f;
    for (int c = 0; c < nchunks; c++)
        if (pm[pi0 + c] != -INFINITY) L += pl[pi0 + c] * __expf(pm[pi0 + c] - M);
    const float invL = tq_fdiv(1.0f, L);
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float a = 0.0f;
        for (int c = 0; c < nchunks; c++)
            if (pm[pi0 + c] != -INFINITY) a += pacc[(pi0 + c) * d + j] * __expf(pm[pi0 + c] - M);
        y[j] = a * invL;
    }
    __syncthreads();
    float* o = out + ((int64_t)t * nh + hq) * d;
    if (vsign) {
        fwht_shared(y, d);
        const float* sg = vsign + (int64_t)(hq / grp) * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = tq_fmul(tq_fmul(sg[j], y[j]), rot_scale);
    } else {
        for (int j = threadIdx.x; j < d; j += blockDim.x) o[j] = y[j];
    }
}

/* query heads per block: 2 for groups of 1 or 2 (most models' GQA of 2), else 8 */
static int heads_per_block(const tq_gkv_shape* sh)
{
    return sh->nh / sh->nkv <= 2 ? 2 : ATT_G;
}

static void attend_plan(const tq_gkv_shape* sh, int T, int P, int* chunk, int* nchunks)
{
    /* enough blocks to fill the GPU (about 1024) without splitting prefill into many partials */
    int64_t ngi = (sh->nh / sh->nkv + heads_per_block(sh) - 1) / heads_per_block(sh);
    int64_t base = (int64_t)T * sh->nkv * ngi;
    int64_t want = base >= 1024 ? 1 : (1024 + base - 1) / base;
    int64_t maxc = (P + ATT_TILE - 1) / ATT_TILE;
    if (want > maxc) want = maxc;
    if (want < 1) want = 1;
    int64_t ch = (P + want - 1) / want;
    ch = (ch + ATT_TILE - 1) / ATT_TILE * ATT_TILE;
    *chunk = (int)ch;
    *nchunks = (int)((P + ch - 1) / ch);
}

extern "C" size_t tq_fwd_attend_work_bytes(const tq_gkv_shape* sh, int T, int P)
{
    int chunk, nc;
    attend_plan(sh, T, P, &chunk, &nc);
    return (size_t)T * sh->nh * nc * (size_t)(sh->d + 2) * sizeof(float);
}

template <int KK, int G>
static void launch_attend_v(int vk, dim3 grid, cudaStream_t st, const float* q, const tq_gkv_side& k, const tq_gkv_side& v,
                            const tq_gkv_shape& sh, int pos0, int chunk, int nc, int ngi, float scale, float* pm, float* pl,
                            float* pacc)
{
    switch (vk) {
    case TQ_GKV_F32: attend_kernel<KK, TQ_GKV_F32, G><<<grid, ATT_NT, 0, st>>>(q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    case TQ_GKV_FP16: attend_kernel<KK, TQ_GKV_FP16, G><<<grid, ATT_NT, 0, st>>>(q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    case TQ_GKV_BF16: attend_kernel<KK, TQ_GKV_BF16, G><<<grid, ATT_NT, 0, st>>>(q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    case TQ_GKV_INT8: attend_kernel<KK, TQ_GKV_INT8, G><<<grid, ATT_NT, 0, st>>>(q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    default: attend_kernel<KK, TQ_GKV_TQ, G><<<grid, ATT_NT, 0, st>>>(q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    }
}

template <int G>
static void launch_attend(int kk, int vk, dim3 grid, cudaStream_t st, const float* q, const tq_gkv_side& k, const tq_gkv_side& v,
                          const tq_gkv_shape& sh, int pos0, int chunk, int nc, int ngi, float scale, float* pm, float* pl,
                          float* pacc)
{
    switch (kk) {
    case TQ_GKV_F32: launch_attend_v<TQ_GKV_F32, G>(vk, grid, st, q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    case TQ_GKV_FP16: launch_attend_v<TQ_GKV_FP16, G>(vk, grid, st, q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    case TQ_GKV_BF16: launch_attend_v<TQ_GKV_BF16, G>(vk, grid, st, q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    case TQ_GKV_INT8: launch_attend_v<TQ_GKV_INT8, G>(vk, grid, st, q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    default: launch_attend_v<TQ_GKV_TQ, G>(vk, grid, st, q, k, v, sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc); break;
    }
}


extern "C" tq_status tq_fwd_attend_cuda(void* stream, float* out, const float* q, const tq_gkv_side* k, const tq_gkv_side* v,
                                        const tq_gkv_shape* sh, int T, int pos0, float scale, float rot_scale, void* work)
{
    if (T <= 0) return TQ_OK;
    TQ_RETURN_IF(sh->d > ATT_MAXD || sh->d <= 0, TQ_ERR_UNSUPPORTED, "GPU attention: head_dim %d (at most %d)", sh->d, ATT_MAXD);
    const int P = pos0 + T;
    int chunk, nc;
    attend_plan(sh, T, P, &chunk, &nc);
    const int G = heads_per_block(sh);
    const int ngi = (sh->nh / sh->nkv + G - 1) / G;
    float* pm = (float*)work;
    float* pl = pm + (size_t)T * sh->nh * nc;
    float* pacc = pl + (size_t)T * sh->nh * nc;
    cudaStream_t st = (cudaStream_t)stream;
    dim3 grid((unsigned)nc, (unsigned)T, (unsigned)(sh->nkv * ngi));
    if (G == 2)
        launch_attend<2>(k->kind, v->kind, grid, st, q, *k, *v, *sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc);
    else
        launch_attend<ATT_G>(k->kind, v->kind, grid, st, q, *k, *v, *sh, pos0, chunk, nc, ngi, scale, pm, pl, pacc);
    TQ_FORWARD(launch_check("attend"));
    dim3 g2((unsigned)T, (unsigned)sh->nh);
    attend_combine_kernel<<<g2, 128, 0, st>>>(out, pm, pl, pacc, sh->nh, sh->d, nc, sh->nh / sh->nkv,
                                              v->kind == TQ_GKV_TQ ? v->sign : NULL, rot_scale);
    return launch_check("attend_combine");
}
