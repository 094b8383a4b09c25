/* deltanet_gpu.cu — CUDA kernels of the Gated DeltaNet token mixer (see kernels/deltanet_gpu.h), the GPU
 * twin of kernels/deltanet_ref.c.
 *
 * Layout of the work: the causal conv is one thread per channel walking the tokens with the last K-1
 * inputs in registers; the delta rule is one thread per column j of a value head's dk x dv state (the
 * columns evolve independently: d_j = beta (v_j - S[:,j]·k), S[:,j] += k d_j, o_j = S[:,j]·q), the column
 * held in registers (template on dk), a block of 32 columns of one head, the tokens' k / q / gates staged in
 * shared memory a chunk at a time. Sums run in the CPU's order with IEEE add / mul (kernels/gpu_common.cuh:
 * no contraction to FMA), so the only differences to the CPU come from the fast-math exp / log. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

extern "C" {
#include "deltanet_gpu.h"
#include "status.h"
}
#include "gpu_common.cuh" /* defines: tq_fadd, tq_fmul, tq_fdiv */

#define DN_COLS 32  /* state columns (threads) per delta-rule block */
#define DN_CHUNK 16 /* tokens staged in shared memory at a time */

static tq_status launch_check(const char* what)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return tq_fail(TQ_ERR_CUDA, "CUDA kernel %s failed to launch: %s", what, cudaGetErrorString(e));
    return TQ_OK;
}

__device__ __forceinline__ float dn_silu(float v)
{
    return tq_fdiv(v, tq_fadd(1.0f, expf(-v)));
}

extern "C" int tq_dn_gpu_dk_ok(int dk)
{
    return dk == 16 || dk == 32 || dk == 64 || dk == 128;
}

// ------------------------------------------------------------------------------------------------
// causal depthwise conv + SiLU

__global__ void dn_conv_kernel(float* x, const float* w, float* state, int T, int C, int K)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int P = K - 1;
    float hist[TQ_DN_MAX_CONV], wc[TQ_DN_MAX_CONV];
#pragma unroll
    for (int j = 0; j < TQ_DN_MAX_CONV; j++) {
        hist[j] = j < P ? state[(int64_t)j * C + c] : 0.0f;
        wc[j] = j < K ? w[(int64_t)c * K + j] : 0.0f;
    }
    for (int t = 0; t < T; t++) {
        const float xv = x[(int64_t)t * C + c];
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < TQ_DN_MAX_CONV; j++)
            if (j < P) s = tq_fadd(s, tq_fmul(wc[j], hist[j]));
#pragma unroll
        for (int j = 0; j < TQ_DN_MAX_CONV; j++)
            if (j == P) s = tq_fadd(s, tq_fmul(wc[j], xv));
        x[(int64_t)t * C + c] = dn_silu(s);
#pragma unroll
        for (int j = 0; j + 1 < TQ_DN_MAX_CONV; j++)
            if (j + 1 < P) hist[j] = hist[j + 1];
#pragma unroll
        for (int j = 0; j < TQ_DN_MAX_CONV; j++)
            if (j == P - 1) hist[j] = xv;
    }
#pragma unroll
    for (int j = 0; j < TQ_DN_MAX_CONV; j++)
        if (j < P) state[(int64_t)j * C + c] = hist[j];
}

extern "C" tq_status tq_dn_conv_silu_cuda(void* stream, float* x, const float* w, float* state, int T, int C, int K)
{
    if (T <= 0 || C <= 0) return TQ_OK;
    if (K < 1 || K > TQ_DN_MAX_CONV) return tq_fail(TQ_ERR_UNSUPPORTED, "DeltaNet conv kernel width %d (GPU: 1..%d)", K, TQ_DN_MAX_CONV);
    dn_conv_kernel<<<(C + 127) / 128, 128, 0, (cudaStream_t)stream>>>(x, w, state, T, C, K);
    return launch_check("deltanet conv");
}

// ------------------------------------------------------------------------------------------------
// gates

__global__ void dn_gates_kernel(float* b, float* a, const float* A_log, const float* dt_bias, int64_t n, int Hv)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int h = (int)(i % Hv);
        b[i] = tq_fdiv(1.0f, tq_fadd(1.0f, expf(-b[i])));
        const float u = tq_fadd(a[i], dt_bias[h]);
        const float sp = u > 20.0f ? u : log1pf(expf(u)); /* torch softplus, threshold 20 */
        a[i] = tq_fmul(-expf(A_log[h]), sp);
    }
}

extern "C" tq_status tq_dn_gates_cuda(void* stream, float* b, float* a, const float* A_log, const float* dt_bias, int T, int Hv)
{
    const int64_t n = (int64_t)T * Hv;
    if (n <= 0) return TQ_OK;
    int blocks = (int)((n + 255) / 256);
    if (blocks > 4096) blocks = 4096;
    dn_gates_kernel<<<blocks, 256, 0, (cudaStream_t)stream>>>(b, a, A_log, dt_bias, n, Hv);
    return launch_check("deltanet gates");
}

// ------------------------------------------------------------------------------------------------
// per-head L2 norm: one warp per (token, head), sequential sum by lane 0 (the CPU's order)

__global__ void dn_l2norm_kernel(float* x, int ld, int T, int H, int d, float scale)
{
    const int64_t row = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (int64_t)T * H) return;
    const int t = (int)(row / H), h = (int)(row % H);
    float* v = x + (int64_t)t * ld + (int64_t)h * d;
    float r = 0.0f;
    if (lane == 0) {
        float ss = 0.0f;
        for (int i = 0; i < d; i++) ss = tq_fadd(ss, tq_fmul(v[i], v[i]));
        r = tq_fdiv(1.0f, __fsqrt_rn(tq_fadd(ss, 1e-6f)));
    }
    r = __shfl_sync(0xffffffffu, r, 0);
    for (int i = lane; i < d; i += 32) {
        float y = tq_fmul(v[i], r);
        if (scale != 1.0f) y = tq_fmul(y, scale);
        v[i] = y;
    }
}

extern "C" tq_status tq_dn_l2norm_cuda(void* stream, float* x, int ld, int T, int H, int d, float scale)
{
    const int64_t rows = (int64_t)T * H;
    if (rows <= 0) return TQ_OK;
    dn_l2norm_kernel<<<(unsigned)((rows + 3) / 4), 128, 0, (cudaStream_t)stream>>>(x, ld, T, H, d, scale);
    return launch_check("deltanet l2norm");
}

// ------------------------------------------------------------------------------------------------
// gated delta rule: block = (value head, 32 state columns); thread = one column, held in registers

template <int DK>
__global__ void __launch_bounds__(DN_COLS) dn_delta_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                                          const float* __restrict__ v, int ld, const float* __restrict__ g,
                                                          const float* __restrict__ beta, float* __restrict__ S, int T,
                                                          int Hv, int rep, int dv, float* __restrict__ out)
{
    __shared__ float ks[DN_CHUNK][DK], qs[DN_CHUNK][DK], gs[DN_CHUNK], bs[DN_CHUNK];
    const int h = blockIdx.x, kh = h / rep;
    const int j = blockIdx.y * DN_COLS + threadIdx.x;
    const bool on = j < dv;
    float* Sh = S + (int64_t)h * DK * dv;
    float s[DK];
#pragma unroll
    for (int i = 0; i < DK; i++) s[i] = on ? Sh[(int64_t)i * dv + j] : 0.0f;
    for (int t0 = 0; t0 < T; t0 += DN_CHUNK) {
        const int nt = T - t0 < DN_CHUNK ? T - t0 : DN_CHUNK;
        __syncthreads();
        for (int idx = threadIdx.x; idx < nt * DK; idx += DN_COLS) {
            const int tt = idx / DK, i = idx % DK;
            const int64_t base = (int64_t)(t0 + tt) * ld + (int64_t)kh * DK + i;
            ks[tt][i] = k[base];
            qs[tt][i] = q[base];
        }
        for (int tt = threadIdx.x; tt < nt; tt += DN_COLS) {
            gs[tt] = expf(g[(int64_t)(t0 + tt) * Hv + h]);
            bs[tt] = beta[(int64_t)(t0 + tt) * Hv + h];
        }
        __syncthreads();
        for (int tt = 0; tt < nt; tt++) {
            const float decay = gs[tt];
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < DK; i++) {
                s[i] = tq_fmul(s[i], decay);
                d = tq_fadd(d, tq_fmul(s[i], ks[tt][i]));
            }
            const float vj = on ? v[(int64_t)(t0 + tt) * ld + (int64_t)h * dv + j] : 0.0f;
            d = tq_fmul(tq_fsub(vj, d), bs[tt]);
            float o = 0.0f;
#pragma unroll
            for (int i = 0; i < DK; i++) {
                s[i] = tq_fadd(s[i], tq_fmul(ks[tt][i], d));
                o = tq_fadd(o, tq_fmul(s[i], qs[tt][i]));
            }
            if (on) out[(int64_t)(t0 + tt) * Hv * dv + (int64_t)h * dv + j] = o;
        }
    }
    if (on) {
#pragma unroll
        for (int i = 0; i < DK; i++) Sh[(int64_t)i * dv + j] = s[i];
    }
}

extern "C" tq_status tq_dn_delta_rule_cuda(void* stream, const float* q, const float* k, const float* v, int ld, const float* g,
                                           const float* beta, float* S, int T, int Hk, int Hv, int dk, int dv, float* out)
{
    if (T <= 0) return TQ_OK;
    if (Hk <= 0 || Hv % Hk || dv <= 0)
        return tq_fail(TQ_ERR_ARG, "DeltaNet heads %d / %d (value heads must be a multiple of key heads)", Hk, Hv);
    dim3 grid((unsigned)Hv, (unsigned)((dv + DN_COLS - 1) / DN_COLS));
    cudaStream_t st = (cudaStream_t)stream;
    const int rep = Hv / Hk;
    switch (dk) {
    case 16: dn_delta_kernel<16><<<grid, DN_COLS, 0, st>>>(q, k, v, ld, g, beta, S, T, Hv, rep, dv, out); break;
    case 32: dn_delta_kernel<32><<<grid, DN_COLS, 0, st>>>(q, k, v, ld, g, beta, S, T, Hv, rep, dv, out); break;
    case 64: dn_delta_kernel<64><<<grid, DN_COLS, 0, st>>>(q, k, v, ld, g, beta, S, T, Hv, rep, dv, out); break;
    case 128: dn_delta_kernel<128><<<grid, DN_COLS, 0, st>>>(q, k, v, ld, g, beta, S, T, Hv, rep, dv, out); break;
    default: return tq_fail(TQ_ERR_UNSUPPORTED, "DeltaNet key head dim %d (GPU: 16, 32, 64, 128)", dk);
    }
    return launch_check("deltanet delta rule");
}

// ------------------------------------------------------------------------------------------------
// gated RMSNorm: one warp per row, sequential sum by lane 0

__global__ void dn_rmsnorm_gated_kernel(float* o, const float* z, const float* w, int64_t rows, int n, float eps)
{
    const int64_t r = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    float* x = o + r * n;
    const float* zr = z + r * n;
    float inv = 0.0f;
    if (lane == 0) {
        float ss = 0.0f;
        for (int j = 0; j < n; j++) ss = tq_fadd(ss, tq_fmul(x[j], x[j]));
        inv = tq_fdiv(1.0f, __fsqrt_rn(tq_fadd(tq_fdiv(ss, (float)n), eps)));
    }
    inv = __shfl_sync(0xffffffffu, inv, 0);
    for (int j = lane; j < n; j += 32) x[j] = tq_fmul(tq_fmul(w[j], tq_fmul(x[j], inv)), dn_silu(zr[j]));
}

extern "C" tq_status tq_dn_rmsnorm_gated_cuda(void* stream, float* o, const float* z, const float* w, int64_t rows, int n, float eps)
{
    if (rows <= 0) return TQ_OK;
    for (int64_t r0 = 0; r0 < rows; r0 += (int64_t)1 << 30) {
        int64_t nr = rows - r0 < ((int64_t)1 << 30) ? rows - r0 : ((int64_t)1 << 30);
        dn_rmsnorm_gated_kernel<<<(unsigned)((nr + 3) / 4), 128, 0, (cudaStream_t)stream>>>(o + r0 * n, z + r0 * n, w, nr, n, eps);
    }
    return launch_check("deltanet gated rmsnorm");
}
