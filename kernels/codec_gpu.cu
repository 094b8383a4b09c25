/* codec_gpu.cu — CUDA quantize / dequantize of every codec (docs/CODECS.md), producing the same bytes
 * as the CPU reference kernels/codec_ref.c: every fp32 operation of the reference is mirrored one to
 * one through the IEEE wrappers of gpu_common.cuh (no flush to zero, no FMA contraction), fp16/bf16
 * conversions are bit-exact copies of pipeline/dtype.h. Double-precision sums (group norms, least-
 * squares scales, means) are reduced as a tree instead of left to right: the stored fp16 can differ
 * from the reference only when the double sum lands within ~1e-16 of an fp32 rounding boundary.
 *
 * Work layout (persistent grids of SMs x resident blocks):
 *   g = 128, full blocks of tq{b}, bin1, rtn{2,3,4,8} (quantize and dequantize) and tq{b}r{b}
 *   (dequantize): the thread-per-block (TPB) kernels below (tq_quant_tpb_kernel / tq_deq_tpb_kernel): one
 *   thread holds a whole block, so butterflies and the reference's serial double sums run in registers
 *   without shuffles; weights reach shared memory by cp.async, outputs leave through a padded shared row
 *   per thread and coalesced 16-byte stores. The rows' tails (cols % g) then run on the warp kernels
 *   (tail_only). TQ_GPU_TPB=0 in the environment turns the TPB kernels off (comparisons).
 *   tq{b} quantize of full g = 128 blocks uses two lanes per block instead (tq_quant_tpb_kernel<.., 2>: 64
 *   values a lane, the stride-64 butterfly over a shuffle, half sums added once; 128 registers so 16
 *   warps fit an SM); TQ_GPU_TPB_LANES=1|2|4 picks the lanes per block (default 2).
 *   Everything else uses the warp-per-block kernels (8 warps a block):
 *   rotation codecs (tq, tqr, bin1): a warp task is one full rotation block of g columns of one row
 *     (E = g/32 values per lane), or a row's whole tail (cols % g, its power-of-two blocks one after the
 *     other, E = d/32 or one value per lane on d lanes for d < 32). In registers: signs, Walsh-Hadamard
 *     butterflies (in-lane stages, then shuffles, unrolled for full blocks), the norm, codes by a fixed
 *     4-step search over 15 boundaries (real ones repeated, +inf padded: no loop over bits; the first
 *     two steps from registers), the least-squares norm, and for tq{b}r{r} the stage-1 reconstruction,
 *     residual and stage 2. Full blocks: each lane packs its E codes in a register and stores them
 *     straight into the row when they fill whole bytes (E * b % 8 == 0); otherwise (tails, E * b odd)
 *     the codes go to a per-warp shared buffer and the warp bit-packs them (a task owns whole bytes).
 *     Each warp loads its next block while working on this one, and steps from task to task without a
 *     division (tq_walk). Rotation signs are computed once per thread block into a shared bit mask;
 *     templates per (g, codec) and __launch_bounds__ (TQ_GPU_QROT_MINB / TQ_GPU_DROT_MINB resident
 *     blocks, measured best on an H100: 3 and 4) keep registers in check.
 *   rtn: one warp per group (groups start on byte boundaries), next group prefetched, min / max by
 *     value (the index-tracking reduction only when the min or max is zero: its sign), codes stored
 *     straight from registers; ter: a row per block (5-trit bytes straddle groups); int8 / fp16 / bf16
 *     / f32: a row per block.
 * Dequantize mirrors this: rotation codecs per (row, block) task reading each lane's codes straight from
 * the packed row (the next task's norms and code words fetched ahead), 16-byte stores; rtn 8 columns
 * per thread; ter stages the row's trits in shared memory.
 * Numeric errors (NaN/Inf input, fp16 overflow of a norm, corrupt fp16 scales) are recorded on the
 * device as the smallest row*cols+col and reported by the host after the launch (check = 1). */
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "codec.h"
#include "codec_gpu.h"
#include "dtype.h"
#include "hadamard.h"
#include "lloydmax.h"
#include "status.h"
}
#include "gpu_common.cuh"

#define TQ_GPU_THREADS 256
#define TQ_GPU_WARPS (TQ_GPU_THREADS / 32)
#define TQ_GPU_NSIZES 10 /* distinct rotation block sizes: at most 1 + log2(256) = 9 */
#define TQ_GPU_FULL 0xffffffffu
#define TQ_GPU_NOERR 0xffffffffffffffffull
#define TQ_GPU_SMEM_MAX (200 * 1024)
/* resident blocks per SM asked of the quantize kernels of the rotation codecs (caps their registers) */
#ifndef TQ_GPU_QROT_MINB
#define TQ_GPU_QROT_MINB 3
#endif
/* the same for the dequantize kernels of the rotation codecs */
#ifndef TQ_GPU_DROT_MINB
#define TQ_GPU_DROT_MINB 4
#endif

/* err[] slots */
#define TQ_GPU_ERR_NAN 0
#define TQ_GPU_ERR_OVF 1
#define TQ_GPU_ERR_CORRUPT 2

typedef struct {
    float cb[TQ_GPU_NSIZES][16];
    float bnd[TQ_GPU_NSIZES][16];
} tq_gpu_cbs;

typedef struct {
    int kind;
    int bits, rbits;
    int g;
    int plain_norm;
    int in_bf16;  /* quantize input / dequantize output is bf16 */
    int64_t rows; /* rows of this launch */
    int64_t row0; /* dequantize: first tensor row; quantize: 0 */
    int64_t cols;
    int64_t nb, ng, nfull;
    int tail;
    int ndist;
    int cb_part[2]; /* part index of codebook / codebook2, -1 if none */
    uint64_t seed[2];
    int size_idx[16];          /* log2(d) -> codebook index */
    float rscale[16];          /* log2(d) -> (float)(1 / sqrt((double)d)) */
    size_t code_bytes;         /* rotation kernels: shared bytes per code row */
    uint8_t* part[TQ_QT_MAX_PARTS];
    size_t row_bytes[TQ_QT_MAX_PARTS];
    const void* in;   /* quantize: weights */
    void* out;        /* dequantize: output */
    unsigned long long* err;
    int write_cb;     /* quantize: block 0 writes the codebook parts from cbs */
    int tail_only;    /* rotation kernels of a warp per block: only the rows' tails (full blocks done by TPB) */
    int tpb_vec;      /* TPB kernels: weights / output rows allow 16-byte asynchronous copies */
    float lut_s[2];   /* TPB quantize: code lookup cells per unit of u, per stage */
    int lut_n[2];     /* TPB quantize: lookup cells per stage (0: none) */
    tq_gpu_cbs cbs[2];
} tq_gpu_params;

// ------------------------------------------------------------------------------------------------
// device helpers

__device__ __forceinline__ void tq_blk(const tq_gpu_params& p, int64_t k, int64_t* s, int* d)
{
    if (k < p.nfull) {
        *s = k * p.g;
        *d = p.g;
        return;
    }
    int64_t st = p.nfull * p.g;
    int64_t t = k - p.nfull;
    for (int bit = 8; bit >= 0; bit--) {
        int b = 1 << bit;
        if (!(p.tail & b)) continue;
        if (t == 0) {
            *s = st;
            *d = b;
            return;
        }
        t--;
        st += b;
    }
    *s = p.cols;
    *d = 0;
}

__device__ __forceinline__ int tq_ilog2_d(int d)
{
    return 31 - __clz(d);
}

__device__ __forceinline__ void tq_err_min(unsigned long long* err, int slot, unsigned long long key)
{
    if (err) atomicMin(err + slot, key);
}

__device__ __forceinline__ double tq_wsum(double v, int L)
{
#pragma unroll
    for (int m = L >> 1; m >= 1; m >>= 1) v += __shfl_xor_sync(TQ_GPU_FULL, v, m);
    return v;
}

/* Load E consecutive weights (fp32 or bf16) at element offset off; inactive lanes get 0. */
template <int E>
__device__ __forceinline__ void tq_load(float (&x)[E], const void* base, int bf16, int64_t off, bool active)
{
    if (!active) {
#pragma unroll
        for (int e = 0; e < E; e++) x[e] = 0.0f;
        return;
    }
    if (bf16) {
        const uint16_t* p = (const uint16_t*)base + off;
        if (E >= 8 && ((uintptr_t)p & 15) == 0) {
#pragma unroll
            for (int c = 0; c < E; c += 8) {
                const uint4 v = *(const uint4*)(p + c);
                const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    x[c + 2 * i] = __uint_as_float(w[i] << 16);
                    x[c + 2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
                }
            }
        } else if (E >= 4 && ((uintptr_t)p & 7) == 0) {
#pragma unroll
            for (int c = 0; c < E; c += 4) {
                uint2 v = *(const uint2*)(p + c);
                x[c] = __uint_as_float(v.x << 16);
                x[c + 1] = __uint_as_float(v.x & 0xffff0000u);
                x[c + 2] = __uint_as_float(v.y << 16);
                x[c + 3] = __uint_as_float(v.y & 0xffff0000u);
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; e++) x[e] = __uint_as_float((uint32_t)p[e] << 16);
        }
    } else {
        const float* p = (const float*)base + off;
        if (E >= 4 && ((uintptr_t)p & 15) == 0) {
#pragma unroll
            for (int c = 0; c < E; c += 4) {
                float4 v = *(const float4*)(p + c);
                x[c] = v.x;
                x[c + 1] = v.y;
                x[c + 2] = v.z;
                x[c + 3] = v.w;
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; e++) x[e] = p[e];
        }
    }
}

/* Store E consecutive values as fp32 or bf16 (round to nearest even). */
template <int E>
__device__ __forceinline__ void tq_store(void* base, int bf16, int64_t off, const float (&v)[E])
{
    if (bf16) {
        uint16_t* p = (uint16_t*)base + off;
        if (E >= 8 && ((uintptr_t)p & 15) == 0) {
#pragma unroll
            for (int c = 0; c < E; c += 8) {
                uint4 o;
                o.x = tq_f32x2_to_bf16x2_d(v[c], v[c + 1]);
                o.y = tq_f32x2_to_bf16x2_d(v[c + 2], v[c + 3]);
                o.z = tq_f32x2_to_bf16x2_d(v[c + 4], v[c + 5]);
                o.w = tq_f32x2_to_bf16x2_d(v[c + 6], v[c + 7]);
                *(uint4*)(p + c) = o;
            }
        } else if (E >= 4 && ((uintptr_t)p & 7) == 0) {
#pragma unroll
            for (int c = 0; c < E; c += 4) {
                uint2 o;
                o.x = tq_f32x2_to_bf16x2_d(v[c], v[c + 1]);
                o.y = tq_f32x2_to_bf16x2_d(v[c + 2], v[c + 3]);
                *(uint2*)(p + c) = o;
            }
        } else {
#pragma unroll
            for (int e = 0; e < E; e++) p[e] = tq_f32_to_bf16_d(v[e]);
        }
    } else {
        float* p = (float*)base + off;
        if (E >= 4 && ((uintptr_t)p & 15) == 0) {
#pragma unroll
            for (int c = 0; c < E; c += 4) *(float4*)(p + c) = make_float4(v[c], v[c + 1], v[c + 2], v[c + 3]);
        } else {
#pragma unroll
            for (int e = 0; e < E; e++) p[e] = v[e];
        }
    }
}

/* Unnormalized Walsh-Hadamard transform of a block held as E values per lane on L lanes (element
 * lane*E + e): the reference's butterflies (a, b) -> (a + b, a - b) for h = 1, 2, 4, ... Across lanes
 * the upper partner computes a - b as (-b) + a, the same IEEE result. */
template <int E>
__device__ __forceinline__ void tq_fwht_lanes(float (&v)[E], int lane, int L)
{
#pragma unroll
    for (int h = 1; h < E; h <<= 1)
#pragma unroll
        for (int i = 0; i < E; i++)
            if (!(i & h)) {
                const float a = v[i], b = v[i + h];
                v[i] = tq_fadd(a, b);
                v[i + h] = tq_fsub(a, b);
            }
#pragma unroll
    for (int m = 1; m < L; m <<= 1) {
        const uint32_t hi = (lane & m) ? 1u : 0u;
#pragma unroll
        for (int i = 0; i < E; i++) {
            const float o = __shfl_xor_sync(TQ_GPU_FULL, v[i], m);
            v[i] = tq_fadd(tq_fsign(v[i], hi), o);
        }
    }
}

/* Forward rotation of a block: signs, butterflies, scale. */
template <int E>
__device__ __forceinline__ void tq_rot_fwd(float (&v)[E], const uint32_t* sg, int col0, int lane, int L, float sc)
{
    const uint32_t sw = sg[col0 >> 5] >> (col0 & 31); /* col0 % E == 0: the E bits share one word */
#pragma unroll
    for (int e = 0; e < E; e++) v[e] = tq_fsign(v[e], (sw >> e) & 1u);
    tq_fwht_lanes<E>(v, lane, L);
#pragma unroll
    for (int e = 0; e < E; e++) v[e] = tq_fmul(v[e], sc);
}

/* Inverse rotation: butterflies, scale, signs. */
template <int E>
__device__ __forceinline__ void tq_rot_inv(float (&v)[E], const uint32_t* sg, int col0, int lane, int L, float sc)
{
    const uint32_t sw = sg[col0 >> 5] >> (col0 & 31);
    tq_fwht_lanes<E>(v, lane, L);
#pragma unroll
    for (int e = 0; e < E; e++) v[e] = tq_fsign(tq_fmul(v[e], sc), (sw >> e) & 1u);
}

/* Codebooks in shared memory: fp32 centroids and boundaries, centroids and their squares in double
 * (exact, so the double sums equal the reference's (double)c products without conversions). */
typedef struct {
    float cb[TQ_GPU_NSIZES][16];
    float bnd[TQ_GPU_NSIZES][16];
    double cbd[TQ_GPU_NSIZES][16];
    double cbsq[TQ_GPU_NSIZES][16];
} tq_cbs_s;

/* Shared-memory layout of the rotation kernels: sign masks, codebooks, per-warp code buffers. */
struct tq_rot_smem {
    uint32_t* sg0;
    uint32_t* sg1;
    tq_cbs_s* cbs;
    uint8_t* cw; /* TQ_GPU_WARPS x 2 x 256 bytes */
};

__host__ __device__ inline size_t tq_align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

__host__ __device__ inline size_t tq_rot_smem_bytes(int64_t cols, int nst)
{
    const size_t nsw = (size_t)((cols + 31) / 32);
    return (size_t)nst * tq_align16(nsw * 4) + tq_align16(2 * sizeof(tq_cbs_s)) + (size_t)TQ_GPU_WARPS * 512;
}

__device__ tq_rot_smem tq_rot_smem_setup(const tq_gpu_params& p, uint8_t* smem, int quantize)
{
    tq_rot_smem S;
    const int nst = p.kind == TQ_CODEC_TQR ? 2 : 1;
    const size_t nsw = (size_t)((p.cols + 31) / 32);
    const size_t sgb = tq_align16(nsw * 4);
    S.sg0 = (uint32_t*)smem;
    S.sg1 = (uint32_t*)(smem + (nst - 1) * sgb);
    S.cbs = (tq_cbs_s*)(smem + nst * sgb);
    S.cw = smem + nst * sgb + tq_align16(2 * sizeof(tq_cbs_s));
    for (int st = 0; st < nst; st++) {
        uint32_t* sg = st ? S.sg1 : S.sg0;
        for (size_t w = threadIdx.x; w < nsw; w += blockDim.x) {
            uint32_t m = 0;
            for (int b = 0; b < 32; b++) {
                const int64_t j = (int64_t)w * 32 + b;
                if (j < p.cols) m |= tq_rot_signbit_d(p.seed[st], j) << b;
            }
            sg[w] = m;
        }
        if (p.kind == TQ_CODEC_BIN1) continue;
        const int n = 1 << (st ? p.rbits : p.bits);
        for (int i = threadIdx.x; i < p.ndist * n; i += blockDim.x) {
            const int di = i / n, j = i % n;
            float c;
            if (quantize) {
                c = p.cbs[st].cb[di][j];
                if (p.write_cb && blockIdx.x == 0) ((float*)p.part[p.cb_part[st]])[i] = c;
            } else {
                c = ((const float*)p.part[p.cb_part[st]])[i];
                if (!tq_finite(c)) tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, 0);
            }
            S.cbs[st].cb[di][j] = c;
            S.cbs[st].cbd[di][j] = tq_f2d(c);
            S.cbs[st].cbsq[di][j] = tq_f2d(c) * tq_f2d(c);
        }
        if (quantize)
            for (int i = threadIdx.x; i < p.ndist * 16; i += blockDim.x) S.cbs[st].bnd[i >> 4][i & 15] = p.cbs[st].bnd[i >> 4][i & 15];
    }
    __syncthreads();
    return S;
}

/* One TurboQuant stage of a rotated block y: codes (to the warp's buffer cw, block-relative), the fp16
 * norm (to global), and the dequantized fp32 values y' = f32(norm) * cb[code] in rec. Every lane runs
 * every shuffle (tiny-norm blocks included), so partial warps (d < 32) stay converged. */
template <int E>
__device__ __forceinline__ void tq_stage_block(const tq_gpu_params& p, const float (&y)[E], float (&rec)[E],
                                               int (&code)[E], const tq_cbs_s& C, int ci, int bits,
                                               uint8_t* norms_row, int64_t k, int s, int64_t r, int lane, int L)
{
    double yd[E];
    double n2 = 0.0;
#pragma unroll
    for (int e = 0; e < E; e++) {
        yd[e] = tq_f2d(y[e]);
        n2 += yd[e] * yd[e];
    }
    n2 = tq_wsum(n2, L);
    const double nd = sqrt(n2);
    if (nd > 2.0 * 65504.0 && lane == 0)
        tq_err_min(p.err, TQ_GPU_ERR_OVF, (unsigned long long)(r + p.row0) * (unsigned long long)p.cols + s);
    const float n = tq_d2f(nd);
    const bool valid = !tq_flt(n, 1e-30f);
    const float inv = tq_fdiv(1.0f, valid ? n : 1.0f);
    const float* bnd = C.bnd[ci];
    const float b3 = bnd[3], b7 = bnd[7], b11 = bnd[11]; /* the first two steps from registers */
    const int shr = 4 - bits;
    double dot = 0.0, cc = 0.0;
#pragma unroll
    for (int e = 0; e < E; e++) {
        const float u = tq_fmul(y[e], inv);
        /* fixed 4-step search over the 15 extended boundaries (see tq_gpu_params_init) */
        int c = tq_fgt(u, b7) ? 8 : 0;
        c += tq_fgt(u, c ? b11 : b3) ? 4 : 0;
        c += tq_fgt(u, bnd[c + 1]) ? 2 : 0;
        c += tq_fgt(u, bnd[c]) ? 1 : 0;
        c = valid ? c >> shr : 0;
        code[e] = c;
        /* both products are exact in double (fp32 operands), so fused or not the sums are the same */
        const double cd = C.cbd[ci][c];
        dot = fma(yd[e], cd, dot);
        cc = fma(cd, cd, cc);
    }
    dot = tq_wsum(dot, L);
    cc = tq_wsum(cc, L);
    uint16_t h = 0;
    if (valid) {
        const double sc = p.plain_norm ? nd : (cc > 0.0 ? dot / cc : 0.0);
        h = tq_f32_to_f16_d(tq_d2f(sc));
        if ((h & 0x7c00u) == 0x7c00u && lane == 0)
            tq_err_min(p.err, TQ_GPU_ERR_OVF, (unsigned long long)(r + p.row0) * (unsigned long long)p.cols + s);
    }
    if (lane == 0) ((uint16_t*)norms_row)[k] = h;
    const float nf = tq_f16_to_f32_d(h);
    const float* cb = C.cb[ci];
#pragma unroll
    for (int e = 0; e < E; e++) rec[e] = tq_fmul(nf, cb[code[e]]);
}

/* A lane's E codes: dst != NULL (E * b a multiple of 8): packed straight into the row dst at column
 * col0 (bit col0 * b, little-endian fields, as tq_pack_warp); else one byte each into the warp buffer cw
 * (block-relative) for tq_pack_warp. */
template <int E>
__device__ __forceinline__ void tq_emit_codes(const int (&code)[E], uint8_t* cw, uint8_t* dst, int col0, int b,
                                              int lane, bool act)
{
    if (!act) return;
    if (dst) {
        uint64_t w = 0;
#pragma unroll
        for (int e = 0; e < E; e++) w |= (uint64_t)code[e] << (e * b);
        uint8_t* q = dst + (((int64_t)col0 * b) >> 3);
        const int nbytes = (E * b) >> 3;
        if (nbytes == 4 && ((uintptr_t)q & 3) == 0) {
            *(uint32_t*)q = (uint32_t)w;
        } else if (nbytes == 2 && ((uintptr_t)q & 1) == 0) {
            *(uint16_t*)q = (uint16_t)w;
        } else {
            for (int i = 0; i < nbytes; i++) q[i] = (uint8_t)(w >> (8 * i));
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < E; e++) cw[lane * E + e] = (uint8_t)code[e];
}

/* Quantize one rotation block (columns [s, s + d)) of row r from x (E values per lane, loaded):
 * codes to cw0 / cw1 (block-relative) or, dst0 / dst1 != NULL, straight into the packed rows; norms /
 * scales to global. DC: the block size when known at compile time (full blocks), else 0. */
template <int E, int K, int DC>
__device__ __forceinline__ void tq_quant_rot_block(const tq_gpu_params& p, const tq_rot_smem& S, const float (&x)[E], uint8_t* cw0,
                                   uint8_t* cw1, uint8_t* dst0, uint8_t* dst1, int64_t r, int64_t k, int s, int d_,
                                   int lane)
{
    const int d = DC ? DC : d_;
    const int L = d / E;
    const bool act = lane < L;
    const int col0 = s + (act ? lane : 0) * E;
    if (p.err && act) {
#pragma unroll
        for (int e = 0; e < E; e++)
            if (!tq_finite(x[e]))
                tq_err_min(p.err, TQ_GPU_ERR_NAN, (unsigned long long)r * (unsigned long long)p.cols + col0 + e);
    }
    const int li = tq_ilog2_d(d);
    const float sc = p.rscale[li];
    float y[E];
#pragma unroll
    for (int e = 0; e < E; e++) y[e] = x[e];
    tq_rot_fwd<E>(y, S.sg0, col0, lane, L, sc);
    if (K == TQ_CODEC_BIN1) {
        double a = 0.0;
#pragma unroll
        for (int e = 0; e < E; e++) a += fabs(tq_f2d(y[e]));
        a = tq_wsum(a, L);
        const double m = a / d;
        const uint16_t h = tq_f32_to_f16_d(tq_d2f(m));
        if (lane == 0) {
            if ((h & 0x7c00u) == 0x7c00u)
                tq_err_min(p.err, TQ_GPU_ERR_OVF, (unsigned long long)r * (unsigned long long)p.cols + s);
            ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = h;
        }
        if (act) {
            int code[E];
#pragma unroll
            for (int e = 0; e < E; e++) code[e] = tq_flt(y[e], 0.0f) ? 0 : 1;
            tq_emit_codes<E>(code, cw0, dst0, col0, 1, lane, act);
        }
        return;
    }
    const int ci = p.size_idx[li];
    float rec[E];
    int code[E];
    tq_stage_block<E>(p, y, rec, code, S.cbs[0], ci, p.bits, p.part[1] + r * p.row_bytes[1], k, s, r, lane, L);
    tq_emit_codes<E>(code, cw0, dst0, col0, p.bits, lane, act);
    if (K != TQ_CODEC_TQR) return;
    tq_rot_inv<E>(rec, S.sg0, col0, lane, L, sc);
#pragma unroll
    for (int e = 0; e < E; e++) y[e] = tq_fsub(x[e], rec[e]);
    tq_rot_fwd<E>(y, S.sg1, col0, lane, L, sc);
    tq_stage_block<E>(p, y, rec, code, S.cbs[1], ci, p.rbits, p.part[4] + r * p.row_bytes[4], k, s, r, lane, L);
    tq_emit_codes<E>(code, cw1, dst1, col0, p.rbits, lane, act);
}

/* A tail block: load, then quantize. */
template <int E, int K>
__device__ __noinline__ void tq_quant_tail_block(const tq_gpu_params& p, const tq_rot_smem& S, uint8_t* cw0, uint8_t* cw1,
                                    int64_t r, int64_t k, int s, int d, int lane)
{
    float x[E];
    const bool act = lane < d / E;
    tq_load<E>(x, p.in, p.in_bf16, r * p.cols + s + (act ? lane : 0) * E, act);
    tq_quant_rot_block<E, K, 0>(p, S, x, cw0, cw1, NULL, NULL, r, k, s, d, lane);
}

/* Pack len codes of the warp's buffer cw (one byte each) into dst as b-bit fields (b = 1..8). The
 * region starts on a byte boundary and owns its bytes (a full block, or a row's whole tail). */
__device__ __forceinline__ uint32_t tq_nib4(uint32_t w)
{
    return (w & 0xfu) | ((w >> 4) & 0xf0u) | ((w >> 8) & 0xf00u) | ((w >> 12) & 0xf000u);
}

__device__ void tq_pack_warp(uint8_t* dst, const uint8_t* cw, int len, int b, int lane)
{
    if (b == 4 && (len & 7) == 0 && ((uintptr_t)dst & 3) == 0) {
        for (int w = lane; w < len / 8; w += 32) {
            const uint32_t a = ((const uint32_t*)cw)[2 * w], c = ((const uint32_t*)cw)[2 * w + 1];
            ((uint32_t*)dst)[w] = tq_nib4(a) | (tq_nib4(c) << 16);
        }
        return;
    }
    const int nbytes = (len * b + 7) >> 3;
    for (int ob = lane; ob < nbytes; ob += 32) {
        uint32_t v;
        if (b == 8) {
            v = cw[ob];
        } else {
            const int bit0 = ob * 8;
            int i = bit0 / b;
            const int sh = bit0 - i * b;
            v = (uint32_t)cw[i] >> sh;
            int pos = b - sh;
            for (i++; pos < 8 && i < len; i++, pos += b) v |= (uint32_t)cw[i] << pos;
        }
        dst[ob] = (uint8_t)v;
    }
}

/* Task t of the persistent loops: row r, task k (k < nfull: full block k; k == nfull: the row's tail). */
__device__ __forceinline__ void tq_task(int64_t t, int64_t tpr, int64_t* r, int64_t* k)
{
    if (t < 0x7fffffff && tpr < 0x7fffffff) {
        const uint32_t q = (uint32_t)t / (uint32_t)tpr;
        *r = q;
        *k = t - (int64_t)q * tpr;
    } else {
        *r = t / tpr;
        *k = t - *r * tpr;
    }
}

/* A warp's walk over tasks t, t + NW, t + 2 NW, ...: (row, task in row) of the current one, and of the
 * next without a 64-bit division per step (TQ_GPU_WALK = 0: divide each time). */
#ifndef TQ_GPU_WALK
#define TQ_GPU_WALK 1
#endif
typedef struct {
    int64_t t, r, j, tpr, dq, dr;
} tq_walk;

__device__ __forceinline__ void tq_walk_init(tq_walk& w, int64_t t, int64_t tpr, int64_t nw)
{
    w.t = t;
    w.tpr = tpr;
    tq_task(t, tpr, &w.r, &w.j);
    w.dq = nw / tpr;
    w.dr = nw - w.dq * tpr;
}

/* (row, task) of t + nw into r, j; then make it the current one. */
__device__ __forceinline__ void tq_walk_step(tq_walk& w, int64_t nw, int64_t* r, int64_t* j)
{
#if TQ_GPU_WALK
    *j = w.j + w.dr;
    *r = w.r + w.dq;
    if (*j >= w.tpr) {
        *j -= w.tpr;
        (*r)++;
    }
#else
    tq_task(w.t + nw, w.tpr, r, j);
#endif
    w.t += nw;
    w.r = *r;
    w.j = *j;
}

/* Quantize, rotation codecs. A task is P consecutive full blocks of a row (P = 2: two blocks per warp,
 * 16 lanes and E = 2g/32 values per lane each, fewer shuffle stages and per-block scalar work per
 * value; P = 1: E = g/32), or the row's whole tail (cols % g: its power-of-two blocks one after the
 * other). A lane group whose block is past the row's full blocks runs with lane ids >= 32, so it writes
 * nothing. Each warp loads its next task's values while working on this one. */
template <int E, int K, int P>
__global__ void __launch_bounds__(TQ_GPU_THREADS, TQ_GPU_QROT_MINB) tq_quant_rot_kernel(const __grid_constant__ tq_gpu_params p)
{
    extern __shared__ __align__(16) uint8_t smem[];
    const tq_rot_smem S = tq_rot_smem_setup(p, smem, 1);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int grp = P == 2 ? lane >> 4 : 0, lane_in = P == 2 ? lane & 15 : lane;
    uint8_t* cw0 = S.cw + warp * 512;
    uint8_t* cw1 = cw0 + 256;
    const int64_t nfp = (p.nfull + P - 1) / P;
    const int64_t tpr = p.tail_only ? 1 : nfp + (p.tail ? 1 : 0);
    const int64_t joff = p.tail_only ? nfp : 0; /* tail_only: every task is a row's tail */
    const int64_t T = p.rows * tpr;
    const int64_t NW = (int64_t)gridDim.x * TQ_GPU_WARPS;
    const int b0 = K == TQ_CODEC_BIN1 ? 1 : p.bits;
    /* full blocks: codes packed in registers and stored directly when a lane's E codes fill whole bytes */
    const bool direct0 = ((E * b0) & 7) == 0;
    const bool direct1 = K == TQ_CODEC_TQR && ((E * p.rbits) & 7) == 0;
    int64_t t = (int64_t)blockIdx.x * TQ_GPU_WARPS + warp;
    float xn[E];
    tq_walk w;
    tq_walk_init(w, t, tpr, NW);
    if (t < T) {
        const int64_t r = w.r, j = w.j + joff;
        const int64_t k = j * P + grp;
        tq_load<E>(xn, p.in, p.in_bf16, r * p.cols + k * p.g + lane_in * E, j < nfp && k < p.nfull);
    }
    for (; t < T; t += NW) {
        const int64_t r = w.r, j = w.j + joff;
        int64_t rn, jn;
        tq_walk_step(w, NW, &rn, &jn);
        jn += joff;
        float x[E];
#pragma unroll
        for (int e = 0; e < E; e++) x[e] = xn[e];
        if (t + NW < T) {
            const int64_t kn = jn * P + grp;
            tq_load<E>(xn, p.in, p.in_bf16, rn * p.cols + kn * p.g + lane_in * E, jn < nfp && kn < p.nfull);
        }
        int base, len;
        if (j < nfp) {
            const int64_t k = j * P + grp;
            const bool live = k < p.nfull;
            base = (int)(j * P * p.g);
            len = (int)((p.nfull - j * P < P ? p.nfull - j * P : P) * p.g);
            uint8_t* d0 = direct0 ? p.part[0] + r * p.row_bytes[0] : NULL;
            uint8_t* d1 = direct1 ? p.part[3] + r * p.row_bytes[3] : NULL;
            tq_quant_rot_block<E, K, E * 32 / P>(p, S, x, cw0 + grp * p.g, cw1 + grp * p.g, d0, d1, r, live ? k : 0,
                                                 live ? (int)(k * p.g) : 0, p.g, live ? lane_in : lane_in + 32);
            if (direct0 && (K != TQ_CODEC_TQR || direct1)) continue;
        } else {
            base = (int)(p.nfull * p.g);
            len = p.tail;
            for (int64_t kk = p.nfull; kk < p.nb; kk++) {
                int64_t s64;
                int d;
                tq_blk(p, kk, &s64, &d);
                const int s = (int)s64, o = s - base;
                if (d >= 256)
                    tq_quant_tail_block<8, K>(p, S, cw0 + o, cw1 + o, r, kk, s, d, lane);
                else if (d == 128)
                    tq_quant_tail_block<4, K>(p, S, cw0 + o, cw1 + o, r, kk, s, d, lane);
                else if (d == 64)
                    tq_quant_tail_block<2, K>(p, S, cw0 + o, cw1 + o, r, kk, s, d, lane);
                else
                    tq_quant_tail_block<1, K>(p, S, cw0 + o, cw1 + o, r, kk, s, d, lane);
            }
        }
        __syncwarp();
        if (!direct0 || j >= nfp) tq_pack_warp(p.part[0] + r * p.row_bytes[0] + (size_t)base * b0 / 8, cw0, len, b0, lane);
        if (K == TQ_CODEC_TQR && (!direct1 || j >= nfp))
            tq_pack_warp(p.part[3] + r * p.row_bytes[3] + (size_t)base * p.rbits / 8, cw1, len, p.rbits, lane);
        __syncwarp();
    }
}

/* The E b-bit codes of a lane (columns col0 .. col0 + E - 1) read straight from a packed row, as one
 * word (code e in bits e * b; E * b <= 32). */
template <int E>
__device__ __forceinline__ uint32_t tq_code_word(const uint8_t* row, int col0, int b, bool act)
{
    if (!act) return 0;
    const int64_t bit0 = (int64_t)col0 * b;
    const uint8_t* q = row + (bit0 >> 3);
    const int sh = (int)(bit0 & 7);
    if (sh == 0 && E * b == 32 && ((uintptr_t)q & 3) == 0) return *(const uint32_t*)q;
    if (sh == 0 && E * b == 16 && ((uintptr_t)q & 1) == 0) return *(const uint16_t*)q;
    if (sh == 0 && E * b == 8) return *q;
    const int nbytes = (sh + E * b + 7) >> 3;
    uint64_t w = 0;
    for (int i = 0; i < nbytes; i++) w |= (uint64_t)q[i] << (8 * i);
    return (uint32_t)(w >> sh);
}

/* What one lane reads of a rotation block: norm(s) and code words. Fetched one task ahead. */
struct tq_deq_in {
    uint32_t h, h2, w0, w1;
};

template <int E>
__device__ __forceinline__ void tq_deq_fetch(const tq_gpu_params& p, int64_t rt, int64_t k, int col0, bool act,
                                             tq_deq_in& in)
{
    in.h = ((const uint16_t*)(p.part[1] + rt * p.row_bytes[1]))[k];
    in.w0 = tq_code_word<E>(p.part[0] + rt * p.row_bytes[0], col0, p.kind == TQ_CODEC_BIN1 ? 1 : p.bits, act);
    in.h2 = 0;
    in.w1 = 0;
    if (p.kind == TQ_CODEC_TQR) {
        in.h2 = ((const uint16_t*)(p.part[4] + rt * p.row_bytes[4]))[k];
        in.w1 = tq_code_word<E>(p.part[3] + rt * p.row_bytes[3], col0, p.rbits, act);
    }
}

/* Dequantize one rotation block of tensor row rt into output row ro from the fetched in. */
template <int E, int DC>
__device__ __forceinline__ void tq_deq_rot_compute(const tq_gpu_params& p, const tq_rot_smem& S, const tq_deq_in& in,
                                                   int64_t rt, int64_t ro, int s, int d_, int lane)
{
    const int d = DC ? DC : d_;
    const int L = d / E;
    const bool act = lane < L;
    const int col0 = s + (act ? lane : 0) * E;
    const int li = tq_ilog2_d(d);
    const float sc = p.rscale[li];
    float v[E];
    if ((in.h & 0x7c00u) == 0x7c00u && lane == 0)
        tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, (unsigned long long)rt * (unsigned long long)p.cols + s);
    const float nf = tq_f16_to_f32_d((uint16_t)in.h);
    if (p.kind == TQ_CODEC_BIN1) {
#pragma unroll
        for (int e = 0; e < E; e++) v[e] = tq_fsign(nf, ((in.w0 >> e) & 1u) ^ 1u);
        tq_rot_inv<E>(v, S.sg0, col0, lane, L, sc);
    } else {
        const int ci = p.size_idx[li];
        const float* cb = S.cbs[0].cb[ci];
        const int b = p.bits;
        const uint32_t mask = (1u << b) - 1u;
#pragma unroll
        for (int e = 0; e < E; e++) v[e] = tq_fmul(nf, cb[(in.w0 >> (e * b)) & mask]);
        tq_rot_inv<E>(v, S.sg0, col0, lane, L, sc);
        if (p.kind == TQ_CODEC_TQR) {
            if ((in.h2 & 0x7c00u) == 0x7c00u && lane == 0)
                tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, (unsigned long long)rt * (unsigned long long)p.cols + s);
            const float nf2 = tq_f16_to_f32_d((uint16_t)in.h2);
            const float* cb2 = S.cbs[1].cb[ci];
            const int b2 = p.rbits;
            const uint32_t mask2 = (1u << b2) - 1u;
            float v2[E];
#pragma unroll
            for (int e = 0; e < E; e++) v2[e] = tq_fmul(nf2, cb2[(in.w1 >> (e * b2)) & mask2]);
            tq_rot_inv<E>(v2, S.sg1, col0, lane, L, sc);
#pragma unroll
            for (int e = 0; e < E; e++) v[e] = tq_fadd(v[e], v2[e]);
        }
    }
    if (act) tq_store<E>(p.out, p.in_bf16, ro * p.cols + col0, v);
}

/* Dequantize one (tail) rotation block of tensor row rt into output row ro. */
template <int E>
__device__ __forceinline__ void tq_deq_rot_block(const tq_gpu_params& p, const tq_rot_smem& S, int64_t rt, int64_t ro,
                                                 int64_t k, int s, int d, int lane)
{
    const bool act = lane < d / E;
    tq_deq_in in;
    tq_deq_fetch<E>(p, rt, k, s + (act ? lane : 0) * E, act, in);
    tq_deq_rot_compute<E, 0>(p, S, in, rt, ro, s, d, lane);
}

/* Dequantize, rotation codecs: tasks as in tq_quant_rot_kernel. The norms and codes of a warp's next
 * full-block task are fetched while it works on this one. */
template <int E, int P>
__global__ void __launch_bounds__(TQ_GPU_THREADS, TQ_GPU_DROT_MINB) tq_deq_rot_kernel(const __grid_constant__ tq_gpu_params p)
{
    extern __shared__ __align__(16) uint8_t smem[];
    const tq_rot_smem S = tq_rot_smem_setup(p, smem, 0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int grp = P == 2 ? lane >> 4 : 0, lane_in = P == 2 ? lane & 15 : lane;
    const int64_t nfp = (p.nfull + P - 1) / P;
    const int64_t tpr = p.tail_only ? 1 : nfp + (p.tail ? 1 : 0);
    const int64_t joff = p.tail_only ? nfp : 0; /* tail_only: every task is a row's tail */
    const int64_t T = p.rows * tpr;
    const int64_t NW = (int64_t)gridDim.x * TQ_GPU_WARPS;
    tq_deq_in nx = {0, 0, 0, 0};
    int64_t t = (int64_t)blockIdx.x * TQ_GPU_WARPS + warp;
    tq_walk w;
    tq_walk_init(w, t, tpr, NW);
    if (t < T) {
        const int64_t ro = w.r, j = w.j + joff;
        const int64_t k = j * P + grp;
        const bool live = j < nfp && k < p.nfull;
        if (j < nfp) tq_deq_fetch<E>(p, ro + p.row0, live ? k : 0, live ? (int)(k * p.g) + lane_in * E : 0, live, nx);
    }
    for (; t < T; t += NW) {
        const int64_t ro = w.r, j = w.j + joff;
        int64_t ron, jn;
        tq_walk_step(w, NW, &ron, &jn);
        jn += joff;
        const int64_t rt = ro + p.row0;
        const tq_deq_in cur = nx;
        if (t + NW < T) {
            const int64_t kn = jn * P + grp;
            const bool liven = jn < nfp && kn < p.nfull;
            if (jn < nfp)
                tq_deq_fetch<E>(p, ron + p.row0, liven ? kn : 0, liven ? (int)(kn * p.g) + lane_in * E : 0, liven, nx);
        }
        if (j < nfp) {
            const int64_t k = j * P + grp;
            const bool live = k < p.nfull;
            tq_deq_rot_compute<E, E * 32 / P>(p, S, cur, rt, ro, live ? (int)(k * p.g) : 0, p.g,
                                              live ? lane_in : lane_in + 32);
            continue;
        }
        for (int64_t kk = p.nfull; kk < p.nb; kk++) {
            int64_t s64;
            int d;
            tq_blk(p, kk, &s64, &d);
            const int s = (int)s64;
            if (d >= 256)
                tq_deq_rot_block<8>(p, S, rt, ro, kk, s, d, lane);
            else if (d == 128)
                tq_deq_rot_block<4>(p, S, rt, ro, kk, s, d, lane);
            else if (d == 64)
                tq_deq_rot_block<2>(p, S, rt, ro, kk, s, d, lane);
            else
                tq_deq_rot_block<1>(p, S, rt, ro, kk, s, d, lane);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// thread-per-block (TPB) kernels: full rotation blocks of g = 64 / 128 columns, one block per thread
//
// Each thread holds a whole rotation block in registers, so the Walsh-Hadamard butterflies, the double
// sums (in the reference's serial order: exact, no tree) and the code search need no shuffles. A warp
// owns 32 consecutive full blocks (flat index row * nfull + k). Quantize: the warp's weights are copied
// into a per-warp shared-memory buffer with 16-byte asynchronous copies (cp.async, coalesced, two
// buffers: the next task's copy runs while this one is computed); each thread then reads its own padded
// row of that buffer. Dequantize: each thread fetches the next task's codes and norms into registers,
// writes its block in the output type to a padded shared row, and the warp stores the 32 rows with
// coalesced 16-byte stores. Codes are found with a lookup table over u (cells narrower than a third
// of the smallest gap between boundaries, so a cell sees at most one boundary) and one exact fp32
// comparison: the same code as counting boundaries below u. The rows' tails (cols % g) and other
// cases run on the warp-per-block kernels above.

#define TQ_TPB_WARPS 4
#define TQ_TPB_THREADS (TQ_TPB_WARPS * 32)
#ifndef TQ_TPB_QMINB
#define TQ_TPB_QMINB 2 /* resident quantize blocks per SM the register budget is set for */
#endif

/* Per stage: the block size's codebook (fp32 and exact double) and its real boundaries (+inf padded). */
typedef struct {
    float cb[16];
    float bnd[16];
    double cbd[16];
} tq_tpb_tab;

__host__ __device__ inline size_t tq_tpb_fixed_bytes(int64_t cols, int nst, const int lut_n[2])
{
    const size_t nsw = (size_t)((cols + 31) / 32);
    return (size_t)nst * tq_align16(nsw * 4) + 2 * sizeof(tq_tpb_tab) + 8 * (size_t)lut_n[0] + 8 * (size_t)lut_n[1];
}

__device__ __forceinline__ void tq_cp16(void* smem_dst, const void* gsrc)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem_dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gsrc) : "memory");
}

__device__ __forceinline__ void tq_cp_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

__device__ __forceinline__ void tq_cp_wait1()
{
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}

__device__ __forceinline__ void tq_cp_wait0()
{
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

/* Shared memory of the TPB kernels: sign masks, codebook tables, code lookup tables, then the per-warp
 * buffers (returned). */
__device__ uint8_t* tq_tpb_setup(const tq_gpu_params& p, uint8_t* smem, int D, int quantize, uint32_t** sg,
                                 tq_tpb_tab** tab, uint2** lut)
{
    const int nst = p.kind == TQ_CODEC_TQR ? 2 : 1;
    const size_t nsw = (size_t)((p.cols + 31) / 32);
    const size_t sgb = tq_align16(nsw * 4);
    sg[0] = (uint32_t*)smem;
    sg[1] = (uint32_t*)(smem + (nst - 1) * sgb);
    size_t off = nst * sgb;
    tab[0] = (tq_tpb_tab*)(smem + off);
    tab[1] = tab[0] + 1;
    off += 2 * sizeof(tq_tpb_tab);
    lut[0] = (uint2*)(smem + off);
    off += 8 * (size_t)p.lut_n[0];
    lut[1] = (uint2*)(smem + off);
    off += 8 * (size_t)p.lut_n[1];
    const int ci = p.size_idx[tq_ilog2_d(D)];
    for (int st = 0; st < nst && p.kind != TQ_CODEC_RTN; st++) {
        uint32_t* sgs = sg[st];
        for (size_t w = threadIdx.x; w < nsw; w += blockDim.x) {
            uint32_t m = 0;
            for (int b = 0; b < 32; b++) {
                const int64_t j = (int64_t)w * 32 + b;
                if (j < p.cols) m |= tq_rot_signbit_d(p.seed[st], j) << b;
            }
            sgs[w] = m;
        }
        if (p.kind == TQ_CODEC_BIN1) continue;
        const int n = 1 << (st ? p.rbits : p.bits);
        const float* src = quantize ? p.cbs[st].cb[ci] : (const float*)p.part[p.cb_part[st]] + ci * n;
        if (quantize && p.write_cb && blockIdx.x == 0)
            for (int i = threadIdx.x; i < p.ndist * n; i += blockDim.x)
                ((float*)p.part[p.cb_part[st]])[i] = p.cbs[st].cb[i / n][i % n];
        if (threadIdx.x < 16) {
            const int i = threadIdx.x;
            const float c = i < n ? src[i] : 0.0f;
            if (!quantize && i < n && !tq_finite(c)) tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, 0);
            tab[st]->cb[i] = c;
            tab[st]->cbd[i] = tq_f2d(c);
            tab[st]->bnd[i] = i < n - 1 ? tq_fmul(0.5f, tq_fadd(c, src[i + 1])) : INFINITY;
        }
    }
    __syncthreads();
    if (quantize && (p.kind == TQ_CODEC_TQ || p.kind == TQ_CODEC_TQR)) {
        for (int st = 0; st < nst; st++) {
            const int nb = (1 << (st ? p.rbits : p.bits)) - 1;
            const double S = p.lut_s[st];
            for (int c = threadIdx.x; c < p.lut_n[st]; c += blockDim.x) {
                /* boundaries surely below every u whose computed cell is c (one cell of margin) */
                const double thr = (double)c / S - 1.0625 - 1.0 / S;
                int cnt = 0;
                for (int j = 0; j < nb; j++) cnt += tq_f2d(tab[st]->bnd[j]) < thr;
                /* the cell's lower code and the boundary above it: one 8-byte load per weight */
                lut[st][c] = make_uint2(__float_as_uint(tab[st]->bnd[cnt]), (unsigned)cnt);
            }
        }
        __syncthreads();
    }
    return smem + off;
}

/* D weights of a shared row (bf16 or fp32) as fp32. */
template <int D>
__device__ __forceinline__ void tq_tpb_load(float (&x)[D], const uint8_t* row, int bf16)
{
    if (bf16) {
#pragma unroll
        for (int c = 0; c < D; c += 8) {
            const uint4 v = *(const uint4*)(row + 2 * c);
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                x[c + 2 * i] = __uint_as_float(w[i] << 16);
                x[c + 2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
            }
        }
    } else {
#pragma unroll
        for (int c = 0; c < D; c += 4) {
            const float4 v = *(const float4*)(row + 4 * c);
            x[c] = v.x;
            x[c + 1] = v.y;
            x[c + 2] = v.z;
            x[c + 3] = v.w;
        }
    }
}

/* Flip v[i] where bit i of the block's sign words is set (sgw: the words of columns col0 ..). */
template <int D>
__device__ __forceinline__ void tq_tpb_signs(float (&v)[D], const uint32_t* sgw)
{
#pragma unroll
    for (int w = 0; w < (D + 31) / 32; w++) {
        const uint32_t m = sgw[w];
#pragma unroll
        for (int e = 0; e < 32; e++)
            if (w * 32 + e < D)
                v[w * 32 + e] = __uint_as_float(__float_as_uint(v[w * 32 + e]) ^ ((m << (31 - e)) & 0x80000000u));
    }
}

template <int D>
__device__ __forceinline__ void tq_tpb_rot_fwd(float (&v)[D], const uint32_t* sgw, float sc)
{
    tq_tpb_signs<D>(v, sgw);
    tq_fwht_lanes<D>(v, 0, 1);
#pragma unroll
    for (int i = 0; i < D; i++) v[i] = tq_fmul(v[i], sc);
}

template <int D>
__device__ __forceinline__ void tq_tpb_rot_inv(float (&v)[D], const uint32_t* sgw, float sc)
{
    tq_fwht_lanes<D>(v, 0, 1);
#pragma unroll
    for (int i = 0; i < D; i++) v[i] = tq_fmul(v[i], sc);
    tq_tpb_signs<D>(v, sgw);
}

/* Code i (B bits) of a packed block held as NW words. */
template <int B, int NW>
__device__ __forceinline__ uint32_t tq_tpb_code(const uint32_t (&w)[NW], int i)
{
    const int bit = i * B, wi = bit >> 5, sh = bit & 31;
    uint32_t v = w[wi] >> sh;
    if (sh + B > 32) v |= w[wi + 1 < NW ? wi + 1 : wi] << (32 - sh);
    return v & ((1u << B) - 1u);
}

template <int NW>
__device__ __forceinline__ void tq_tpb_store_words(uint8_t* dst, const uint32_t (&w)[NW])
{
    const uintptr_t a = (uintptr_t)dst;
    if (NW % 4 == 0 && (a & 15) == 0) {
#pragma unroll
        for (int i = 0; i < NW; i += 4) *(uint4*)(dst + 4 * i) = make_uint4(w[i], w[i + 1], w[i + 2], w[i + 3]);
    } else if (NW % 2 == 0 && (a & 7) == 0) {
#pragma unroll
        for (int i = 0; i < NW; i += 2) *(uint2*)(dst + 4 * i) = make_uint2(w[i], w[i + 1]);
    } else if ((a & 3) == 0) {
#pragma unroll
        for (int i = 0; i < NW; i++) *(uint32_t*)(dst + 4 * i) = w[i];
    } else {
#pragma unroll
        for (int i = 0; i < NW; i++)
#pragma unroll
            for (int b = 0; b < 4; b++) dst[4 * i + b] = (uint8_t)(w[i] >> (8 * b));
    }
}

template <int NW>
__device__ __forceinline__ void tq_tpb_load_words(uint32_t (&w)[NW], const uint8_t* src)
{
    const uintptr_t a = (uintptr_t)src;
    if (NW % 4 == 0 && (a & 15) == 0) {
#pragma unroll
        for (int i = 0; i < NW; i += 4) {
            const uint4 v = *(const uint4*)(src + 4 * i);
            w[i] = v.x;
            w[i + 1] = v.y;
            w[i + 2] = v.z;
            w[i + 3] = v.w;
        }
    } else if (NW % 2 == 0 && (a & 7) == 0) {
#pragma unroll
        for (int i = 0; i < NW; i += 2) {
            const uint2 v = *(const uint2*)(src + 4 * i);
            w[i] = v.x;
            w[i + 1] = v.y;
        }
    } else if ((a & 3) == 0) {
#pragma unroll
        for (int i = 0; i < NW; i++) w[i] = *(const uint32_t*)(src + 4 * i);
    } else {
#pragma unroll
        for (int i = 0; i < NW; i++)
            w[i] = (uint32_t)src[4 * i] | ((uint32_t)src[4 * i + 1] << 8) | ((uint32_t)src[4 * i + 2] << 16) |
                   ((uint32_t)src[4 * i + 3] << 24);
    }
}

/* Codes of N rotated values y (B bits, packed into cw) and the serial double sums <y,c> and <c,c>: the
 * lookup cell of u = y * inv (ls cells per unit, ln cells) gives the code below u and the boundary above
 * it, then one exact comparison. */
template <int N, int B>
__device__ __forceinline__ void tq_tpb_codes(const float (&y)[N], float inv, const uint2* lut, float ls, int ln,
                                             const tq_tpb_tab& T, uint32_t (&cw)[N * B / 32], double& dot, double& cc)
{
    const float lc = 1.0625f * ls;
    const unsigned lmax = (unsigned)(ln - 1);
#pragma unroll
    for (int w = 0; w < N * B / 32; w++) cw[w] = 0;
#pragma unroll
    for (int i = 0; i < N; i++) {
        const float u = tq_fmul(y[i], inv);
        unsigned idx = (unsigned)__float2int_rd(u * ls + lc);
        idx = idx < lmax ? idx : lmax;
        const uint2 cell = lut[idx];
        /* u > boundary exactly when boundary - u is negative (an exact sign: -0 for a flushed negative
         * denormal, +0 when equal, +inf for the top code): the code is the cell's lower code plus that sign
         * bit (one shift-add). A NaN u, whose block is reported as an error anyway, may differ. */
        const uint32_t c = cell.y + (__float_as_uint(tq_fsub(__uint_as_float(cell.x), u)) >> 31);
        const int bit = i * B;
        /* the fields do not overlap: adding is or-ing, and shift + add is one instruction */
        cw[bit >> 5] += c << (bit & 31);
        if ((bit & 31) + B > 32) cw[((bit >> 5) + 1) < N * B / 32 ? (bit >> 5) + 1 : 0] += c >> (32 - (bit & 31));
        const double cd = T.cbd[c];
        dot = fma(tq_f2d(y[i]), cd, dot);
        cc = fma(cd, cd, cc);
    }
}

/* One TurboQuant stage of a rotated block y (the reference's tq_stage_q, same operations and order):
 * packed codes into cw, the fp16 norm into h. Returns true when the norm overflows fp16 (or is NaN). */
template <int D, int B>
__device__ __forceinline__ bool tq_tpb_stage(const tq_gpu_params& p, const float (&y)[D], uint32_t (&cw)[D * B / 32],
                                             uint16_t& h, const tq_tpb_tab& T, const uint2* lut, float ls, int ln)
{
    double n2 = 0.0;
#pragma unroll
    for (int i = 0; i < D; i++) {
        const double yd = tq_f2d(y[i]);
        n2 = fma(yd, yd, n2); /* yd * yd is exact in double: the same as the reference's mul then add */
    }
    const double nd = sqrt(n2);
    bool ovf = !(nd <= 2.0 * 65504.0);
    const float n = tq_d2f(nd);
    const bool valid = !tq_flt(n, 1e-30f);
    const float inv = tq_fdiv(1.0f, valid ? n : 1.0f);
    double dot = 0.0, cc = 0.0;
    tq_tpb_codes<D, B>(y, inv, lut, ls, ln, T, cw, dot, cc);
    h = 0;
    if (!valid) {
        /* a zero (or denormal-norm) block: all codes 0, as the reference writes them */
#pragma unroll
        for (int w = 0; w < D * B / 32; w++) cw[w] = 0;
    } else {
        const double s = p.plain_norm ? nd : (cc > 0.0 ? dot / cc : 0.0);
        h = tq_f32_to_f16_d(tq_d2f(s));
        if ((h & 0x7c00u) == 0x7c00u) ovf = true;
    }
    return ovf;
}

/* Quantize full block fb (flat index row * nfull + k) from its shared row. */
template <int D, int K, int B>
__device__ __forceinline__ void tq_quant_tpb_block(const tq_gpu_params& p, uint32_t* const* sg, tq_tpb_tab* const* tab,
                                                   uint2* const* lut, const uint8_t* row, int64_t fb)
{
    int64_t r, k;
    tq_task(fb, p.nfull, &r, &k);
    const int col0 = (int)(k * D);
    const float sc = p.rscale[tq_ilog2_d(D)];
    float y[D];
    tq_tpb_load<D>(y, row, p.in_bf16);
    if (K == TQ_CODEC_RTN) {
        /* the reference's order: min / max left to right (first of equal values), then per value */
        const unsigned long long key = (unsigned long long)r * (unsigned long long)p.cols + col0;
        if (p.err) {
#pragma unroll
            for (int i = 0; i < D; i++)
                if (!tq_finite(y[i])) tq_err_min(p.err, TQ_GPU_ERR_NAN, key + i);
        }
        float lo = y[0], hi = y[0];
#pragma unroll
        for (int i = 1; i < D; i++) {
            if (tq_flt(y[i], lo)) lo = y[i];
            if (tq_fgt(y[i], hi)) hi = y[i];
        }
        constexpr int maxq = (1 << B) - 1;
        const float scr = tq_fdiv(tq_fsub(hi, lo), (float)maxq);
        const uint16_t hs = tq_f32_to_f16_d(scr), hm = tq_f32_to_f16_d(lo);
        if ((hm & 0x7c00u) == 0x7c00u || (hs & 0x7c00u) == 0x7c00u) tq_err_min(p.err, TQ_GPU_ERR_OVF, key);
        ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = hs;
        ((uint16_t*)(p.part[2] + r * p.row_bytes[2]))[k] = hm;
        const float scf = tq_f16_to_f32_d(hs), mnf = tq_f16_to_f32_d(hm);
        const bool pos = tq_fgt(scf, 0.0f);
        uint32_t cw[D * B / 32];
#pragma unroll
        for (int w = 0; w < D * B / 32; w++) cw[w] = 0;
#pragma unroll
        for (int i = 0; i < D; i++) {
            const float v = tq_ffloor(tq_fadd(tq_fdiv(tq_fsub(y[i], mnf), scf), 0.5f));
            uint32_t c = tq_fle(v, 0.0f) ? 0u : tq_fge(v, (float)maxq) ? (uint32_t)maxq : (uint32_t)(int)v;
            c = pos ? c : 0u;
            const int bit = i * B;
            cw[bit >> 5] |= c << (bit & 31);
            if ((bit & 31) + B > 32) cw[((bit >> 5) + 1) < D * B / 32 ? (bit >> 5) + 1 : 0] |= c >> (32 - (bit & 31));
        }
        tq_tpb_store_words<D * B / 32>(p.part[0] + r * p.row_bytes[0] + (size_t)col0 * B / 8, cw);
        return;
    }
    tq_tpb_rot_fwd<D>(y, sg[0] + (col0 >> 5), sc);
    const unsigned long long key = (unsigned long long)r * (unsigned long long)p.cols + col0;
    bool ovf;
    if (K == TQ_CODEC_BIN1) {
        double a = 0.0;
        uint32_t cw[D / 32];
#pragma unroll
        for (int w = 0; w < D / 32; w++) cw[w] = 0;
#pragma unroll
        for (int i = 0; i < D; i++) {
            a += fabs(tq_f2d(y[i]));
            cw[i >> 5] |= (uint32_t)(tq_flt(y[i], 0.0f) ? 0 : 1) << (i & 31);
        }
        const double m = a / D;
        const uint16_t h = tq_f32_to_f16_d(tq_d2f(m));
        ovf = (h & 0x7c00u) == 0x7c00u;
        tq_tpb_store_words<D / 32>(p.part[0] + r * p.row_bytes[0] + (size_t)col0 / 8, cw);
        ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = h;
    } else {
        uint32_t cw[D * B / 32];
        uint16_t h;
        ovf = tq_tpb_stage<D, B>(p, y, cw, h, *tab[0], lut[0], p.lut_s[0], p.lut_n[0]);
        tq_tpb_store_words<D * B / 32>(p.part[0] + r * p.row_bytes[0] + (size_t)col0 * B / 8, cw);
        ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = h;
        if (K == TQ_CODEC_TQR) {
            /* stage-1 reconstruction exactly as the dequantizer, residual, stage 2 with seed2 */
            const float nf = tq_f16_to_f32_d(h);
#pragma unroll
            for (int i = 0; i < D; i++) y[i] = tq_fmul(nf, tab[0]->cb[tq_tpb_code<B, D * B / 32>(cw, i)]);
            tq_tpb_rot_inv<D>(y, sg[0] + (col0 >> 5), sc);
            float x[D];
            tq_tpb_load<D>(x, row, p.in_bf16);
#pragma unroll
            for (int i = 0; i < D; i++) y[i] = tq_fsub(x[i], y[i]);
            tq_tpb_rot_fwd<D>(y, sg[1] + (col0 >> 5), sc);
            uint16_t h2;
            ovf |= tq_tpb_stage<D, B>(p, y, cw, h2, *tab[1], lut[1], p.lut_s[1], p.lut_n[1]);
            tq_tpb_store_words<D * B / 32>(p.part[3] + r * p.row_bytes[3] + (size_t)col0 * B / 8, cw);
            ((uint16_t*)(p.part[4] + r * p.row_bytes[4]))[k] = h2;
        }
    }
    if (ovf && p.err) {
        /* NaN / Inf input makes the norm NaN / Inf: find the first such column (the reference's check) */
        float x[D];
        tq_tpb_load<D>(x, row, p.in_bf16);
#pragma unroll
        for (int i = 0; i < D; i++)
            if (!tq_finite(x[i])) tq_err_min(p.err, TQ_GPU_ERR_NAN, key + i);
        tq_err_min(p.err, TQ_GPU_ERR_OVF, key);
    }
}

/* Copy the weights of task t (full blocks 32 t .. 32 t + 31) into the warp buffer buf (row j at j * RB). */
template <int D>
__device__ __forceinline__ void tq_tpb_fetch(const tq_gpu_params& p, int64_t t, uint8_t* buf, int lane, int es, int RB,
                                             int64_t F, int BPT = 32)
{
    const int64_t f0 = t * BPT;
    const int nblk = F - f0 < BPT ? (int)(F - f0) : BPT;
    const uint8_t* in = (const uint8_t*)p.in;
    if (p.tpb_vec && p.tail == 0) {
        /* no partial blocks: the task's blocks are one contiguous range of the input */
        const int CH = D * es / 16, lg = es == 2 ? tq_ilog2_d(D) - 3 : tq_ilog2_d(D) - 2;
        const int nch = nblk * CH;
        const uint8_t* src = in + f0 * D * es;
        for (int c = lane; c < nch; c += 32) tq_cp16(buf + (c >> lg) * RB + (c & (CH - 1)) * 16, src + (size_t)c * 16);
        return;
    }
    int64_t r, k;
    tq_task(f0 + (lane < nblk ? lane : 0), p.nfull, &r, &k);
    const int64_t off = r * p.cols + k * D; /* elements */
    if (p.tpb_vec) {
        const int CH = D * es / 16, lg = es == 2 ? tq_ilog2_d(D) - 3 : tq_ilog2_d(D) - 2;
        const int nch = nblk * CH;
        const bool contig = p.tail == 0;
        for (int c0 = 0; c0 < nch; c0 += 32) {
            const int c = c0 + lane;
            const int j = (c >> lg) & 31;
            const long long offj = contig ? 0 : __shfl_sync(TQ_GPU_FULL, (long long)off, j);
            if (c < nch) {
                const uint8_t* src = contig ? in + (f0 * D) * es + (int64_t)c * 16 : in + offj * es + (c & (CH - 1)) * 16;
                tq_cp16(buf + j * RB + (c & (CH - 1)) * 16, src);
            }
        }
    } else if (lane < nblk) {
        uint8_t* dst = buf + lane * RB;
        if (es == 2) {
            for (int i = 0; i < D; i++) ((uint16_t*)dst)[i] = ((const uint16_t*)in)[off + i];
        } else {
            for (int i = 0; i < D; i++) ((float*)dst)[i] = ((const float*)in)[off + i];
        }
    }
}


/* L lanes per block (tq{b} quantize, g = 128; tq_quant_tpb_kernel with L = 2 or 4): lanes L j .. L j + L-1
 * hold block j of the task, H = 128 / L values each, so a thread needs a fraction of the registers of the
 * one-lane kernel and more warps fit on an SM (the one-lane kernel is latency-bound at 8 warps per SM:
 * docs/CODECS.md §6). The butterflies of strides 1..H/2 run in registers, the larger ones over xor
 * shuffles (the same operations as the reference's). Each lane adds its part's norm², <y,c> and <c,c>
 * serially, then the parts are added over shuffles: like the warp kernels' shuffle sums this may differ
 * from the reference's serial double sum in its last bit, which moves an fp32 norm by one ulp in ~1e-8 of
 * blocks (none among the test cases). */
#ifndef TQ_TPB2_MINB
#define TQ_TPB2_MINB 4
#endif
#ifndef TQ_TPB4_MINB
#define TQ_TPB4_MINB 6
#endif

template <int H, int B, int L>
__device__ __forceinline__ void tq_tpbl_block(const tq_gpu_params& p, uint32_t* const* sg, const tq_tpb_tab& T,
                                              const uint2* lut, const uint8_t* row, int64_t fb, bool act, int lane)
{
    constexpr int NW = H * B / 32;
    const int half = lane & (L - 1); /* this lane's part of the block */
    int64_t r, k;
    tq_task(fb, p.nfull, &r, &k);
    const int colh = (int)(k * L * H) + half * H;
    const int es = p.in_bf16 ? 2 : 4;
    float y[H];
    tq_tpb_load<H>(y, row + half * H * es, p.in_bf16);
    tq_tpb_signs<H>(y, sg[0] + (colh >> 5));
    tq_fwht_lanes<H>(y, lane, L);
    const float sc = p.rscale[tq_ilog2_d(L * H)];
#pragma unroll
    for (int i = 0; i < H; i++) y[i] = tq_fmul(y[i], sc);
    double n2 = 0.0;
#pragma unroll
    for (int i = 0; i < H; i++) {
        const double yd = tq_f2d(y[i]);
        n2 = fma(yd, yd, n2);
    }
    n2 = tq_wsum(n2, L);
    const double nd = sqrt(n2);
    bool ovf = !(nd <= 2.0 * 65504.0);
    const float n = tq_d2f(nd);
    const bool valid = !tq_flt(n, 1e-30f);
    const float inv = tq_fdiv(1.0f, valid ? n : 1.0f);
    uint32_t cw[NW];
    double dot = 0.0, cc = 0.0;
    tq_tpb_codes<H, B>(y, inv, lut, p.lut_s[0], p.lut_n[0], T, cw, dot, cc);
    dot = tq_wsum(dot, L);
    cc = tq_wsum(cc, L);
    uint16_t h = 0;
    if (!valid) {
#pragma unroll
        for (int w = 0; w < NW; w++) cw[w] = 0;
    } else {
        const double s = p.plain_norm ? nd : (cc > 0.0 ? dot / cc : 0.0);
        h = tq_f32_to_f16_d(tq_d2f(s));
        if ((h & 0x7c00u) == 0x7c00u) ovf = true;
    }
    if (!act) return;
    tq_tpb_store_words<NW>(p.part[0] + r * p.row_bytes[0] + (size_t)colh * B / 8, cw);
    if (!half) ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = h;
    if (ovf && p.err) {
        const unsigned long long key = (unsigned long long)r * (unsigned long long)p.cols + colh;
        float x[H];
        tq_tpb_load<H>(x, row + half * H * es, p.in_bf16);
#pragma unroll
        for (int i = 0; i < H; i++)
            if (!tq_finite(x[i])) tq_err_min(p.err, TQ_GPU_ERR_NAN, key + i);
        if (!half) tq_err_min(p.err, TQ_GPU_ERR_OVF, key);
    }
}

/* Quantize full g = D blocks with L lanes per block (1: tq_quant_tpb_block, any TPB codec; 2 or
 * 4: tq{b} only, tq_tpbl_block). A warp task is 32 / L consecutive blocks, staged by cp.async one task ahead. */
template <int D, int K, int B, int L>
__global__ void __launch_bounds__(TQ_TPB_THREADS, L == 4 ? TQ_TPB4_MINB : L == 2 ? TQ_TPB2_MINB : TQ_TPB_QMINB)
    tq_quant_tpb_kernel(const __grid_constant__ tq_gpu_params p)
{
    constexpr int BPT = 32 / L;
    extern __shared__ __align__(16) uint8_t smem[];
    uint32_t* sg[2];
    tq_tpb_tab* tab[2];
    uint2* lut[2];
    uint8_t* stg = tq_tpb_setup(p, smem, D, 1, sg, tab, lut);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int es = p.in_bf16 ? 2 : 4;
    const int RB = D * es + 16;
    uint8_t* buf0 = stg + (size_t)warp * 2 * BPT * RB;
    uint8_t* buf1 = buf0 + BPT * RB;
    const int64_t F = p.rows * p.nfull;
    const int64_t NT = (F + BPT - 1) / BPT;
    const int64_t NW = (int64_t)gridDim.x * TQ_TPB_WARPS;
    int64_t t = (int64_t)blockIdx.x * TQ_TPB_WARPS + warp;
    if (t < NT) tq_tpb_fetch<D>(p, t, buf0, lane, es, RB, F, BPT);
    tq_cp_commit();
    for (int it = 0; t < NT; t += NW, it ^= 1) {
        uint8_t* cur = it ? buf1 : buf0;
        if (t + NW < NT) tq_tpb_fetch<D>(p, t + NW, it ? buf0 : buf1, lane, es, RB, F, BPT);
        tq_cp_commit();
        tq_cp_wait1();
        __syncwarp();
        const int64_t fb = t * BPT + lane / L;
        if (L == 1) {
            if (fb < F) tq_quant_tpb_block<D, K, B>(p, sg, tab, lut, cur + lane * RB, fb);
        } else {
            /* every lane runs the pair's shuffles: a pair past the end works on block F - 1, stores nothing */
            const bool act = fb < F;
            tq_tpbl_block<D / L, B, L>(p, sg, *tab[0], lut[0], cur + (act ? lane / L : 0) * RB, act ? fb : F - 1,
                                       act, lane);
        }
        __syncwarp();
    }
    tq_cp_wait0();
}

/* What a thread reads of its block for dequantize (fetched one task ahead). */
template <int NW, int NW2>
struct tq_tpb_din {
    uint32_t w[NW];
    uint32_t w2[NW2];
    uint32_t h, h2;
};

template <int D, int K, int B, int NW, int NW2>
__device__ __forceinline__ void tq_tpb_dfetch(const tq_gpu_params& p, int64_t fb, tq_tpb_din<NW, NW2>& in)
{
    int64_t ro, k;
    tq_task(fb, p.nfull, &ro, &k);
    const int64_t rt = ro + p.row0;
    const int col0 = (int)(k * D);
    in.h = ((const uint16_t*)(p.part[1] + rt * p.row_bytes[1]))[k];
    tq_tpb_load_words<NW>(in.w, p.part[0] + rt * p.row_bytes[0] + (size_t)col0 * B / 8);
    if (K == TQ_CODEC_RTN) in.h2 = ((const uint16_t*)(p.part[2] + rt * p.row_bytes[2]))[k];
    if (K == TQ_CODEC_TQR) {
        in.h2 = ((const uint16_t*)(p.part[4] + rt * p.row_bytes[4]))[k];
        tq_tpb_load_words<NW2>(in.w2, p.part[3] + rt * p.row_bytes[3] + (size_t)col0 * B / 8);
    }
}

template <int D, int K, int B>
__global__ void __launch_bounds__(TQ_TPB_THREADS, 2) tq_deq_tpb_kernel(const __grid_constant__ tq_gpu_params p)
{
    constexpr int BB = K == TQ_CODEC_BIN1 ? 1 : B;
    constexpr int NW = D * BB / 32;
    constexpr int NW2 = K == TQ_CODEC_TQR ? NW : 1;
    extern __shared__ __align__(16) uint8_t smem[];
    uint32_t* sg[2];
    tq_tpb_tab* tab[2];
    uint2* lut[2];
    uint8_t* stg = tq_tpb_setup(p, smem, D, 0, sg, tab, lut);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int es = p.in_bf16 ? 2 : 4;
    const int RB = (K == TQ_CODEC_TQR ? D * 4 : D * es) + 16;
    uint8_t* buf = stg + (size_t)warp * 32 * RB;
    uint8_t* row = buf + lane * RB;
    const int64_t F = p.rows * p.nfull;
    const int64_t NT = (F + 31) >> 5;
    const int64_t NW_ = (int64_t)gridDim.x * TQ_TPB_WARPS;
    const float sc = p.rscale[tq_ilog2_d(D)];
    int64_t t = (int64_t)blockIdx.x * TQ_TPB_WARPS + warp;
    tq_tpb_din<NW, NW2> nx;
    nx.h = nx.h2 = 0;
    if (t < NT && t * 32 + lane < F) tq_tpb_dfetch<D, K, BB, NW, NW2>(p, t * 32 + lane, nx);
    for (; t < NT; t += NW_) {
        const tq_tpb_din<NW, NW2> in = nx;
        const int64_t fb = t * 32 + lane;
        if (t + NW_ < NT && (t + NW_) * 32 + lane < F) tq_tpb_dfetch<D, K, BB, NW, NW2>(p, (t + NW_) * 32 + lane, nx);
        int64_t ro = 0, k = 0;
        if (fb < F) {
            tq_task(fb, p.nfull, &ro, &k);
            const int64_t rt = ro + p.row0;
            const int col0 = (int)(k * D);
            if ((in.h & 0x7c00u) == 0x7c00u || ((K == TQ_CODEC_TQR || K == TQ_CODEC_RTN) && (in.h2 & 0x7c00u) == 0x7c00u))
                tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, (unsigned long long)rt * (unsigned long long)p.cols + col0);
            const float nf = tq_f16_to_f32_d((uint16_t)in.h);
            float v[D];
            if (K == TQ_CODEC_RTN) {
                const float mn = tq_f16_to_f32_d((uint16_t)in.h2);
#pragma unroll
                for (int i = 0; i < D; i++) v[i] = tq_fadd(mn, tq_fmul((float)tq_tpb_code<BB, NW>(in.w, i), nf));
            } else if (K == TQ_CODEC_BIN1) {
#pragma unroll
                for (int i = 0; i < D; i++) v[i] = tq_fsign(nf, ((in.w[i >> 5] >> (i & 31)) & 1u) ^ 1u);
            } else {
#pragma unroll
                for (int i = 0; i < D; i++) v[i] = tq_fmul(nf, tab[0]->cb[tq_tpb_code<BB, NW>(in.w, i)]);
            }
            if (K != TQ_CODEC_RTN) tq_tpb_rot_inv<D>(v, sg[0] + (col0 >> 5), sc);
            if (K == TQ_CODEC_TQR) {
                /* stage 1 parked as fp32 in the row, stage 2, then the sum in the output type */
#pragma unroll
                for (int i = 0; i < D; i += 4) *(float4*)(row + 4 * i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
                const float nf2 = tq_f16_to_f32_d((uint16_t)in.h2);
#pragma unroll
                for (int i = 0; i < D; i++) v[i] = tq_fmul(nf2, tab[1]->cb[tq_tpb_code<BB, NW2>(in.w2, i)]);
                tq_tpb_rot_inv<D>(v, sg[1] + (col0 >> 5), sc);
#pragma unroll
                for (int i = 0; i < D; i += 4) {
                    const float4 a = *(const float4*)(row + 4 * i);
                    v[i] = tq_fadd(a.x, v[i]);
                    v[i + 1] = tq_fadd(a.y, v[i + 1]);
                    v[i + 2] = tq_fadd(a.z, v[i + 2]);
                    v[i + 3] = tq_fadd(a.w, v[i + 3]);
                }
            }
            if (p.in_bf16) {
#pragma unroll
                for (int i = 0; i < D; i += 8) {
                    uint4 o;
                    o.x = tq_f32x2_to_bf16x2_d(v[i], v[i + 1]);
                    o.y = tq_f32x2_to_bf16x2_d(v[i + 2], v[i + 3]);
                    o.z = tq_f32x2_to_bf16x2_d(v[i + 4], v[i + 5]);
                    o.w = tq_f32x2_to_bf16x2_d(v[i + 6], v[i + 7]);
                    *(uint4*)(row + 2 * i) = o;
                }
            } else {
#pragma unroll
                for (int i = 0; i < D; i += 4) *(float4*)(row + 4 * i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
            }
        }
        __syncwarp();
        /* the warp's rows to global memory */
        const int64_t f0 = t * 32;
        const int nblk = F - f0 < 32 ? (int)(F - f0) : 32;
        const int64_t off = ro * p.cols + k * D;
        uint8_t* out = (uint8_t*)p.out;
        if (p.tpb_vec) {
            const int CH = D * es / 16, lg = es == 2 ? tq_ilog2_d(D) - 3 : tq_ilog2_d(D) - 2;
            const int nch = nblk * CH;
            const bool contig = p.tail == 0;
            for (int c0 = 0; c0 < nch; c0 += 32) {
                const int c = c0 + lane;
                const int j = (c >> lg) & 31;
                const long long offj = contig ? 0 : __shfl_sync(TQ_GPU_FULL, (long long)off, j);
                if (c < nch) {
                    uint8_t* dst = contig ? out + (f0 * D) * es + (int64_t)c * 16 : out + offj * es + (c & (CH - 1)) * 16;
                    *(uint4*)dst = *(const uint4*)(buf + j * RB + (c & (CH - 1)) * 16);
                }
            }
        } else if (fb < F) {
            if (es == 2) {
                for (int i = 0; i < D; i++) ((uint16_t*)out)[off + i] = ((const uint16_t*)row)[i];
            } else {
                for (int i = 0; i < D; i++) ((float*)out)[off + i] = ((const float*)row)[i];
            }
        }
        __syncwarp();
    }
}

/* Pack one row of per-column codes (one byte each, shared) into b-bit fields (b = 1..8) or, b == 0,
 * trits (5 per byte; codes hold t + 1). */
__device__ void tq_pack_row(uint8_t* dst, size_t row_bytes, const uint8_t* codes, int64_t cols, int b)
{
    const bool al = ((uintptr_t)dst & 3) == 0;
    for (int64_t w = threadIdx.x; w * 4 < (int64_t)row_bytes; w += blockDim.x) {
        uint32_t out = 0;
        for (int q = 0; q < 4; q++) {
            const int64_t kb = w * 4 + q;
            if (kb >= (int64_t)row_bytes) break;
            uint32_t v = 0;
            if (b == 0) {
                uint32_t pw = 1;
                for (int t = 0; t < 5 && kb * 5 + t < cols; t++, pw *= 3) v += codes[kb * 5 + t] * pw;
            } else if (b == 8) {
                v = codes[kb];
            } else {
                const int64_t bit0 = kb * 8;
                int64_t i = bit0 / b;
                const int sh = (int)(bit0 - i * b);
                v = (uint32_t)codes[i] >> sh;
                int pos = b - sh;
                for (i++; pos < 8 && i < cols; i++, pos += b) v |= (uint32_t)codes[i] << pos;
            }
            out |= (v & 0xffu) << (8 * q);
        }
        if (al && w * 4 + 4 <= (int64_t)row_bytes) {
            *(uint32_t*)(dst + w * 4) = out;
        } else {
            for (int q = 0; q < 4 && w * 4 + q < (int64_t)row_bytes; q++) dst[w * 4 + q] = (uint8_t)(out >> (8 * q));
        }
    }
}

/* Copy row_bytes of src (global) into shared dst, 16 bytes at a time when aligned. */
__device__ void tq_stage_bytes(uint8_t* dst, const uint8_t* src, size_t n)
{
    if (((uintptr_t)src & 15) == 0 && (n & 15) == 0) {
        for (size_t i = threadIdx.x; i < n / 16; i += blockDim.x) ((uint4*)dst)[i] = ((const uint4*)src)[i];
    } else {
        for (size_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
    }
}

/* Code i of a b-bit stream staged in shared memory (padded by 2 bytes). */
__device__ __forceinline__ int tq_code_at(const uint8_t* s, int64_t i, int b)
{
    const int64_t bit = i * b;
    const uint32_t w = (uint32_t)s[bit >> 3] | ((uint32_t)s[(bit >> 3) + 1] << 8);
    return (int)((w >> (bit & 7)) & ((1u << b) - 1u));
}

// ------------------------------------------------------------------------------------------------
// group codecs (ter, rtn) and per-row codecs (int8, fp16, bf16, f32)

/* (value, index) pair reduction that keeps what the reference's left-to-right `if (w < lo) lo = w`
 * keeps: the smallest value, the first index among equal values (+0 and -0 compare equal). */
__device__ __forceinline__ void tq_argmin_merge(float& v, int& i, float ov, int oi, bool want_max)
{
    const bool better = want_max ? tq_fgt(ov, v) : tq_flt(ov, v);
    const bool worse = want_max ? tq_fgt(v, ov) : tq_flt(v, ov);
    if (better || (!worse && oi < i)) {
        v = ov;
        i = oi;
    }
}

/* Quantize group k of row r (one warp, E values per lane). Returns true when the codes were packed
 * straight into the row (rtn, full group, a lane's E codes fill whole bytes), false when they are in
 * codes_g (one byte each) for the caller to pack. */
template <int E>
__device__ __forceinline__ bool tq_quant_group(const tq_gpu_params& p, uint8_t* codes_g, int64_t r, int64_t k,
                                               int lane, const float (&xpre)[E], bool pre)
{
    const int64_t s = k * p.g;
    const int n = (int)(p.cols - s < p.g ? p.cols - s : p.g);
    const int i0 = lane * E;
    float x[E];
    const bool full = i0 + E <= n;
    if (pre) {
#pragma unroll
        for (int e = 0; e < E; e++) x[e] = xpre[e];
    } else if (full) {
        tq_load<E>(x, p.in, p.in_bf16, r * p.cols + s + i0, true);
    } else {
#pragma unroll
        for (int e = 0; e < E; e++) {
            float t = 0.0f;
            if (i0 + e < n) {
                const int64_t off = r * p.cols + s + i0 + e;
                t = p.in_bf16 ? tq_bf16_to_f32_d(((const uint16_t*)p.in)[off]) : ((const float*)p.in)[off];
            }
            x[e] = t;
        }
    }
    if (p.err) {
#pragma unroll
        for (int e = 0; e < E; e++)
            if (i0 + e < n && !tq_finite(x[e]))
                tq_err_min(p.err, TQ_GPU_ERR_NAN, (unsigned long long)r * (unsigned long long)p.cols + s + i0 + e);
    }
    if (p.kind == TQ_CODEC_RTN) {
        const int maxq = (1 << p.bits) - 1;
        /* min / max by value (2 shuffles a step); equal values have equal bits except +0 / -0, so when
         * the min or the max is zero, redo it keeping the reference's first index (its zero's sign) */
        float lo = i0 < n ? x[0] : INFINITY, hi = i0 < n ? x[0] : -INFINITY;
#pragma unroll
        for (int e = 1; e < E; e++)
            if (i0 + e < n) {
                if (tq_flt(x[e], lo)) lo = x[e];
                if (tq_fgt(x[e], hi)) hi = x[e];
            }
#pragma unroll
        for (int m = 16; m >= 1; m >>= 1) {
            const float ol = __shfl_xor_sync(TQ_GPU_FULL, lo, m), oh = __shfl_xor_sync(TQ_GPU_FULL, hi, m);
            if (tq_flt(ol, lo)) lo = ol;
            if (tq_fgt(oh, hi)) hi = oh;
        }
        const bool lo0 = !tq_flt(lo, 0.0f) && !tq_fgt(lo, 0.0f), hi0 = !tq_flt(hi, 0.0f) && !tq_fgt(hi, 0.0f);
        if (lo0 || hi0) {
        lo = x[0], hi = x[0];
        int ilo = i0 < n ? i0 : 1 << 30, ihi = ilo;
        if (!(i0 < n)) lo = hi = 0.0f;
#pragma unroll
        for (int e = 1; e < E; e++)
            if (i0 + e < n) {
                if (tq_flt(x[e], lo)) { lo = x[e]; ilo = i0 + e; }
                if (tq_fgt(x[e], hi)) { hi = x[e]; ihi = i0 + e; }
            }
        for (int m = 16; m >= 1; m >>= 1) {
            const float ol = __shfl_xor_sync(TQ_GPU_FULL, lo, m), oh = __shfl_xor_sync(TQ_GPU_FULL, hi, m);
            const int oil = __shfl_xor_sync(TQ_GPU_FULL, ilo, m), oih = __shfl_xor_sync(TQ_GPU_FULL, ihi, m);
            if (oil < (1 << 30)) {
                if (ilo >= (1 << 30)) { lo = ol; ilo = oil; } else tq_argmin_merge(lo, ilo, ol, oil, false);
            }
            if (oih < (1 << 30)) {
                if (ihi >= (1 << 30)) { hi = oh; ihi = oih; } else tq_argmin_merge(hi, ihi, oh, oih, true);
            }
        }
        }
        const float scr = tq_fdiv(tq_fsub(hi, lo), (float)maxq);
        const uint16_t hs = tq_f32_to_f16_d(scr), hm = tq_f32_to_f16_d(lo);
        if (lane == 0) {
            if ((hm & 0x7c00u) == 0x7c00u || (hs & 0x7c00u) == 0x7c00u)
                tq_err_min(p.err, TQ_GPU_ERR_OVF, (unsigned long long)r * (unsigned long long)p.cols + s);
            ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = hs;
            ((uint16_t*)(p.part[2] + r * p.row_bytes[2]))[k] = hm;
        }
        const float scf = tq_f16_to_f32_d(hs), mnf = tq_f16_to_f32_d(hm);
        const bool pos = tq_fgt(scf, 0.0f);
        int code[E];
#pragma unroll
        for (int e = 0; e < E; e++) {
            int c = 0;
            if (pos) {
                const float v = tq_ffloor(tq_fadd(tq_fdiv(tq_fsub(x[e], mnf), scf), 0.5f));
                c = tq_fle(v, 0.0f) ? 0 : tq_fge(v, (float)maxq) ? maxq : (int)v;
            }
            code[e] = c;
        }
        if (n == p.g && ((E * p.bits) & 7) == 0) {
            tq_emit_codes<E>(code, NULL, p.part[0] + r * p.row_bytes[0], (int)s + i0, p.bits, lane, true);
            return true;
        }
#pragma unroll
        for (int e = 0; e < E; e++)
            if (i0 + e < n) codes_g[i0 + e] = (uint8_t)code[e];
        return false;
    }
    /* ter */
    double a = 0.0;
#pragma unroll
    for (int e = 0; e < E; e++) a += fabs(tq_f2d(x[e])); /* inactive lanes hold 0 */
    for (int m = 16; m >= 1; m >>= 1) a += __shfl_xor_sync(TQ_GPU_FULL, a, m);
    const float gamma = tq_d2f(a / (double)n);
    double sum = 0.0;
    int cnt = 0;
#pragma unroll
    for (int e = 0; e < E; e++) {
        int t = 0;
        if (tq_fgt(gamma, 0.0f)) {
            const float v = tq_fdiv(x[e], gamma);
            t = tq_fge(v, 0.5f) ? 1 : tq_fle(v, -0.5f) ? -1 : 0;
        }
        if (i0 + e < n) {
            codes_g[i0 + e] = (uint8_t)(t + 1);
            if (t) {
                sum += fabs(tq_f2d(x[e]));
                cnt++;
            }
        }
    }
    for (int m = 16; m >= 1; m >>= 1) {
        sum += __shfl_xor_sync(TQ_GPU_FULL, sum, m);
        cnt += __shfl_xor_sync(TQ_GPU_FULL, cnt, m);
    }
    const double sv = cnt ? sum / (double)cnt : 0.0;
    const uint16_t h = tq_f32_to_f16_d(tq_d2f(sv));
    if (lane == 0) {
        if ((h & 0x7c00u) == 0x7c00u)
            tq_err_min(p.err, TQ_GPU_ERR_OVF, (unsigned long long)r * (unsigned long long)p.cols + s);
        ((uint16_t*)(p.part[1] + r * p.row_bytes[1]))[k] = h;
    }
    return false;
}

__device__ __forceinline__ float tq_load1(const tq_gpu_params& p, int64_t off)
{
    return p.in_bf16 ? tq_bf16_to_f32_d(((const uint16_t*)p.in)[off]) : ((const float*)p.in)[off];
}

template <int E>
__global__ void __launch_bounds__(TQ_GPU_THREADS) tq_quant_plain_kernel(const __grid_constant__ tq_gpu_params p)
{
    extern __shared__ __align__(16) uint8_t smem[];
    __shared__ float red[TQ_GPU_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (p.kind == TQ_CODEC_RTN) {
        /* one warp per group; groups start on byte boundaries (g * b / 8), so each warp packs its own */
        uint8_t* cw = smem + warp * 256;
        const int64_t tpr = p.tail_only ? 1 : p.ng, koff = p.tail_only ? p.ng - 1 : 0; /* tail_only: last groups */
        const int64_t T = p.rows * tpr, NW = (int64_t)gridDim.x * TQ_GPU_WARPS;
        /* the values of the warp's next full group are loaded while it works on this one */
        float xn[E];
        bool pren = false;
        int64_t t = (int64_t)blockIdx.x * TQ_GPU_WARPS + warp;
        tq_walk w;
        tq_walk_init(w, t, tpr, NW);
        if (t < T) {
            const int64_t r = w.r, k = w.j + koff;
            pren = k < p.nfull;
            if (pren) tq_load<E>(xn, p.in, p.in_bf16, r * p.cols + k * p.g + lane * E, true);
        }
        for (; t < T; t += NW) {
            const int64_t r = w.r, k = w.j + koff;
            int64_t rn, kn;
            tq_walk_step(w, NW, &rn, &kn);
            kn += koff;
            float x[E];
#pragma unroll
            for (int e = 0; e < E; e++) x[e] = xn[e];
            const bool pre = pren;
            pren = false;
            if (t + NW < T) {
                pren = kn < p.nfull;
                if (pren) tq_load<E>(xn, p.in, p.in_bf16, rn * p.cols + kn * p.g + lane * E, true);
            }
            if (tq_quant_group<E>(p, cw, r, k, lane, x, pre)) continue;
            __syncwarp();
            const int64_t s = k * p.g;
            const int n = (int)(p.cols - s < p.g ? p.cols - s : p.g);
            tq_pack_warp(p.part[0] + r * p.row_bytes[0] + (size_t)s * p.bits / 8, cw, n, p.bits, lane);
            __syncwarp();
        }
        return;
    }
    for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
        if (p.kind == TQ_CODEC_TER) {
            const float none[E] = {};
            for (int64_t k = warp; k < p.ng; k += TQ_GPU_WARPS)
                tq_quant_group<E>(p, smem + k * p.g, r, k, lane, none, false);
            __syncthreads();
            tq_pack_row(p.part[0] + r * p.row_bytes[0], p.row_bytes[0], smem, p.cols, 0);
            __syncthreads();
            continue;
        }
        if (p.kind == TQ_CODEC_INT8) {
            float amax = 0.0f;
            for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
                const float w = tq_load1(p, r * p.cols + j);
                if (p.err && !tq_finite(w))
                    tq_err_min(p.err, TQ_GPU_ERR_NAN, (unsigned long long)r * (unsigned long long)p.cols + j);
                const float aw = fabsf(w);
                if (tq_fgt(aw, amax)) amax = aw;
            }
            for (int m = 16; m >= 1; m >>= 1) {
                const float o = __shfl_xor_sync(TQ_GPU_FULL, amax, m);
                if (tq_fgt(o, amax)) amax = o;
            }
            if (lane == 0) red[warp] = amax;
            __syncthreads();
            amax = red[0];
            for (int w = 1; w < TQ_GPU_WARPS; w++)
                if (tq_fgt(red[w], amax)) amax = red[w];
            const float scale = tq_fdiv(amax, 127.0f);
            int8_t* c = (int8_t*)(p.part[0] + r * p.row_bytes[0]);
            for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
                int v = 0;
                if (tq_fgt(scale, 0.0f)) {
                    const float f = roundf(tq_fdiv(tq_load1(p, r * p.cols + j), scale));
                    v = tq_fgt(f, 127.0f) ? 127 : tq_flt(f, -127.0f) ? -127 : (int)f;
                }
                c[j] = (int8_t)v;
            }
            if (threadIdx.x == 0) *(float*)(p.part[1] + r * p.row_bytes[1]) = scale;
            __syncthreads();
            continue;
        }
        uint8_t* dst = p.part[0] + r * p.row_bytes[0];
        for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
            const float w = tq_load1(p, r * p.cols + j);
            const unsigned long long key = (unsigned long long)r * (unsigned long long)p.cols + j;
            if (p.err && !tq_finite(w)) tq_err_min(p.err, TQ_GPU_ERR_NAN, key);
            if (p.kind == TQ_CODEC_FP16) {
                const uint16_t h = tq_f32_to_f16_d(w);
                if ((h & 0x7c00u) == 0x7c00u) tq_err_min(p.err, TQ_GPU_ERR_OVF, key);
                ((uint16_t*)dst)[j] = h;
            } else if (p.kind == TQ_CODEC_BF16) {
                const uint16_t h = tq_f32_to_bf16_d(w);
                if ((h & 0x7f80u) == 0x7f80u) tq_err_min(p.err, TQ_GPU_ERR_OVF, key);
                ((uint16_t*)dst)[j] = h;
            } else {
                ((float*)dst)[j] = w;
            }
        }
    }
}

/* Dequantize group / per-row codecs: 8 consecutive columns per thread. */
__global__ void __launch_bounds__(TQ_GPU_THREADS) tq_deq_plain_kernel(const __grid_constant__ tq_gpu_params p)
{
    extern __shared__ __align__(16) uint8_t smem[];
    const int gshift = tq_ilog2_d(p.g);
    for (int64_t ro = blockIdx.x; ro < p.rows; ro += gridDim.x) {
        const int64_t rt = ro + p.row0;
        const bool staged = p.kind == TQ_CODEC_TER;
        if (staged) {
            tq_stage_bytes(smem, p.part[0] + rt * p.row_bytes[0], p.row_bytes[0]);
            if (threadIdx.x < 2) smem[p.row_bytes[0] + threadIdx.x] = 0;
            __syncthreads();
        }
        float iscale = 0.0f;
        if (p.kind == TQ_CODEC_INT8) {
            iscale = *(const float*)(p.part[1] + rt * p.row_bytes[1]);
            if (!tq_finite(iscale) && threadIdx.x == 0)
                tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, (unsigned long long)rt * (unsigned long long)p.cols);
        }
        const int64_t jbeg = p.tail_only ? p.nfull * p.g : 0; /* tail_only: the last (partial) group */
        for (int64_t j0 = jbeg + (int64_t)threadIdx.x * 8; j0 < p.cols; j0 += (int64_t)blockDim.x * 8) {
            float v[8];
            uint64_t cbits = 0; /* rtn: the 8 codes of columns j0..j0+7 (byte aligned: j0 * b / 8) */
            float rsc = 0.0f, rmn = 0.0f;
            if (p.kind == TQ_CODEC_RTN) {
                const int64_t k = j0 >> gshift; /* g % 8 == 0: one group for the 8 columns */
                const uint16_t hs = ((const uint16_t*)(p.part[1] + rt * p.row_bytes[1]))[k];
                const uint16_t hm = ((const uint16_t*)(p.part[2] + rt * p.row_bytes[2]))[k];
                if (((hs & 0x7c00u) == 0x7c00u || (hm & 0x7c00u) == 0x7c00u) && (j0 & (p.g - 1)) == 0)
                    tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, (unsigned long long)rt * (unsigned long long)p.cols + j0);
                rsc = tq_f16_to_f32_d(hs);
                rmn = tq_f16_to_f32_d(hm);
                const uint8_t* q = p.part[0] + rt * p.row_bytes[0] + (size_t)j0 * p.bits / 8;
                const int64_t left = (int64_t)p.row_bytes[0] - j0 * p.bits / 8;
                const int nbytes = left < p.bits ? (int)left : p.bits;
                if (nbytes == 4 && ((uintptr_t)q & 3) == 0) {
                    cbits = *(const uint32_t*)q;
                } else {
                    for (int i = 0; i < nbytes; i++) cbits |= (uint64_t)q[i] << (8 * i);
                }
            }
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const int64_t j = j0 + e;
                float o = 0.0f;
                if (j < p.cols) {
                    if (p.kind == TQ_CODEC_RTN) {
                        o = tq_fadd(rmn, tq_fmul((float)((cbits >> (e * p.bits)) & ((1u << p.bits) - 1u)), rsc));
                    } else if (p.kind == TQ_CODEC_TER) {
                        const int64_t k = j >> gshift;
                        const uint16_t hs = ((const uint16_t*)(p.part[1] + rt * p.row_bytes[1]))[k];
                        if ((hs & 0x7c00u) == 0x7c00u && (j & (p.g - 1)) == 0)
                            tq_err_min(p.err, TQ_GPU_ERR_CORRUPT, (unsigned long long)rt * (unsigned long long)p.cols + j);
                        uint32_t b = smem[j / 5];
                        for (int t = (int)(j % 5); t > 0; t--) b /= 3;
                        o = tq_fmul((float)((int)(b % 3) - 1), tq_f16_to_f32_d(hs));
                    } else if (p.kind == TQ_CODEC_INT8) {
                        o = tq_fmul((float)((const int8_t*)(p.part[0] + rt * p.row_bytes[0]))[j], iscale);
                    } else if (p.kind == TQ_CODEC_FP16) {
                        o = tq_f16_to_f32_d(((const uint16_t*)(p.part[0] + rt * p.row_bytes[0]))[j]);
                    } else if (p.kind == TQ_CODEC_BF16) {
                        o = tq_bf16_to_f32_d(((const uint16_t*)(p.part[0] + rt * p.row_bytes[0]))[j]);
                    } else {
                        o = ((const float*)(p.part[0] + rt * p.row_bytes[0]))[j];
                    }
                }
                v[e] = o;
            }
            if (j0 + 8 <= p.cols) {
                tq_store<8>(p.out, p.in_bf16, ro * p.cols + j0, v);
            } else {
                for (int e = 0; e < 8 && j0 + e < p.cols; e++) {
                    if (p.in_bf16)
                        ((uint16_t*)p.out)[ro * p.cols + j0 + e] = tq_f32_to_bf16_d(v[e]);
                    else
                        ((float*)p.out)[ro * p.cols + j0 + e] = v[e];
                }
            }
        }
        if (staged) __syncthreads();
    }
}

// ------------------------------------------------------------------------------------------------
// host side

static int tq_ilog2_h(int d)
{
    int k = 0;
    while ((1 << k) < d) k++;
    return k;
}

static int tq_part_index(const tq_qtensor* q, const char* name)
{
    for (int i = 0; i < q->nparts; i++)
        if (!strcmp(q->part[i].name, name)) return i;
    return -1;
}

/* Fill the launch parameters shared by quantize and dequantize. quantize = 1 computes the codebooks
 * (Lloyd-Max, as the reference) and their boundaries. */
static tq_status tq_gpu_params_init(tq_gpu_params* P, const tq_qtensor* q, uint8_t* const* d_parts, int quantize,
                                    const char* what)
{
    memset(P, 0, sizeof *P);
    const tq_codec* c = &q->codec;
    P->kind = (int)c->kind;
    P->bits = c->bits;
    P->rbits = c->rbits;
    P->g = c->group;
    P->cols = q->cols;
    P->plain_norm = (q->flags & TQ_QFLAG_PLAIN_NORM) != 0;
    if (q->cols < 1 || (P->g != 64 && P->g != 128 && P->g != 256))
        return tq_fail(TQ_ERR_ARG, "tensor %s: invalid quantized tensor (cols %lld, group %d)", what,
                       (long long)q->cols, P->g);
    if (c->kind == TQ_CODEC_INVALID || q->nparts < 1)
        return tq_fail(TQ_ERR_ARG, "tensor %s: invalid codec (lay the tensor out with tq_qtensor_layout)", what);
    P->nb = tq_rot_nblocks(q->cols, P->g);
    P->ng = (q->cols + P->g - 1) / P->g;
    P->nfull = q->cols / P->g;
    P->tail = (int)(q->cols % P->g);
    int sizes[16];
    P->ndist = tq_rot_block_sizes(q->cols, P->g, sizes);
    for (int i = 0; i < P->ndist; i++) {
        const int li = tq_ilog2_h(sizes[i]);
        P->size_idx[li] = i;
    }
    for (int li = 0; li < 16; li++) P->rscale[li] = (float)(1.0 / sqrt((double)(1 << li)));
    for (int i = 0; i < q->nparts; i++) {
        if (!d_parts[i] && q->part[i].bytes)
            return tq_fail(TQ_ERR_ARG, "tensor %s: no device buffer for part '%s'", what, q->part[i].name);
        P->part[i] = d_parts[i];
        P->row_bytes[i] = q->part[i].row_bytes;
    }
    P->seed[0] = q->seed;
    P->seed[1] = tq_rot_seed2(q->seed);
    P->cb_part[0] = tq_part_index(q, "codebook");
    P->cb_part[1] = tq_part_index(q, "codebook2");
    if (c->kind == TQ_CODEC_TQ || c->kind == TQ_CODEC_TQR) {
        const int nst = c->kind == TQ_CODEC_TQR ? 2 : 1;
        for (int st = 0; st < nst; st++) {
            const int bits = st ? c->rbits : c->bits;
            const int n = 1 << bits;
            if (bits < 1 || bits > 4 || P->cb_part[st] < 0 ||
                q->part[P->cb_part[st]].bytes != (size_t)(4 * n * P->ndist))
                return tq_fail(TQ_ERR_CORRUPT, "tensor %s: codebook part missing or of the wrong size", what);
            if (!quantize) continue;
            for (int i = 0; i < P->ndist; i++) {
                float* cb = P->cbs[st].cb[i];
                TQ_FORWARD(tq_lloydmax_unit_f32(TQ_LAW_BETA, sizes[i], bits, cb));
                /* 15 boundaries for a fixed 4-step search: each of the n - 1 real ones repeated 16 / n times,
                 * then +inf; the search counts the entries below u, so the code is that count / (16 / n). */
                const int m = 16 / n;
                for (int j = 0; j < 15; j++)
                    P->cbs[st].bnd[i][j] = j / m < n - 1 ? 0.5f * (cb[j / m] + cb[j / m + 1]) : INFINITY;
                P->cbs[st].bnd[i][15] = INFINITY;
            }
            /* TPB code lookup for full blocks: cells of 1/S with 3.25 cells < the smallest boundary gap */
            if (P->nfull > 0) {
                const float* cb = P->cbs[st].cb[P->size_idx[tq_ilog2_h(P->g)]];
                double gap = 1.0;
                for (int j = 0; j + 2 < n; j++) {
                    const double b0 = 0.5f * (cb[j] + cb[j + 1]), b1 = 0.5f * (cb[j + 1] + cb[j + 2]);
                    if (b1 - b0 < gap) gap = b1 - b0;
                }
                int S = 32;
                while (S < 4096 && 3.25 / S > gap) S *= 2;
                if (3.25 / S <= gap) {
                    P->lut_s[st] = (float)S;
                    P->lut_n[st] = (int)(2.125 * S) + 2;
                }
            }
        }
    }
    return TQ_OK;
}

static int tq_gpu_is_rot(int kind)
{
    return kind == TQ_CODEC_TQ || kind == TQ_CODEC_TQR || kind == TQ_CODEC_BIN1;
}

/* Launch a kernel on a persistent grid (SMs x resident blocks, capped by rows). */
template <typename K>
static tq_status tq_gpu_launch(K kernel, const tq_gpu_params* P, size_t smem, cudaStream_t stream, const char* what)
{
    if (smem > TQ_GPU_SMEM_MAX)
        return tq_fail(TQ_ERR_UNSUPPORTED,
                       "tensor %s: rows of %lld columns need %zu bytes of shared memory, over the GPU kernels' %d; "
                       "quantize this tensor on the CPU (tq_quantize_ref)",
                       what, (long long)P->cols, smem, TQ_GPU_SMEM_MAX);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int dev = 0, nsm = 0, per = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, TQ_GPU_THREADS, smem));
    if (per < 1) per = 1;
    int64_t grid = (int64_t)nsm * per;
    if (grid > P->rows) grid = P->rows;
    if (grid < 1) return TQ_OK;
    kernel<<<(unsigned)grid, TQ_GPU_THREADS, smem, stream>>>(*P);
    CUDA_CHECK(cudaGetLastError());
    return TQ_OK;
}

/* Launch a TPB kernel: persistent grid (SMs x resident blocks), capped by the warp tasks. */
template <typename K>
static tq_status tq_tpb_launch(K kernel, const tq_gpu_params* P, size_t smem, cudaStream_t stream, int bpt = 32)
{
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int dev = 0, nsm = 0, per = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, TQ_TPB_THREADS, smem));
    if (per < 1) per = 1;
    const int64_t nt = (P->rows * P->nfull + bpt - 1) / bpt;
    int64_t grid = (int64_t)nsm * per;
    const int64_t need = (nt + TQ_TPB_WARPS - 1) / TQ_TPB_WARPS;
    if (grid > need) grid = need;
    if (grid < 1) return TQ_OK;
    kernel<<<(unsigned)grid, TQ_TPB_THREADS, smem, stream>>>(*P);
    CUDA_CHECK(cudaGetLastError());
    return TQ_OK;
}

/* TPB kernels on (default) unless the environment sets TQ_GPU_TPB=0 (the warp-per-block kernels for
 * everything: for comparisons). */
static int tq_tpb_enabled(void)
{
    static int on = -1;
    if (on < 0) {
        const char* e = getenv("TQ_GPU_TPB");
        on = !(e && e[0] == '0');
    }
    return on;
}

/* Lanes per block of the tq{b} quantize TPB kernel: TQ_GPU_TPB_LANES = 1, 2 or 4 (default 2). */
static int tq_tpb_lanes(void)
{
    static int lanes = 0;
    if (!lanes) {
        const char* e = getenv("TQ_GPU_TPB_LANES");
        lanes = e && (e[0] == '1' || e[0] == '4') && !e[1] ? e[0] - '0' : 2;
    }
    return lanes;
}

/* Shared bytes of a TPB kernel, 0 when the TPB kernels do not apply (other group sizes, no full block,
 * tq{b}r{r} with r != b, a codebook whose boundaries are too close for the lookup, too many columns). */
static size_t tq_tpb_smem(const tq_gpu_params* P, int quantize)
{
    const int rtn = P->kind == TQ_CODEC_RTN;
    if ((!tq_gpu_is_rot(P->kind) && !rtn) || P->g != 128 || P->nfull < 1 || P->rows < 1 || !tq_tpb_enabled()) return 0;
    if (rtn && P->bits != 2 && P->bits != 3 && P->bits != 4 && P->bits != 8) return 0;
    const int tqr = P->kind == TQ_CODEC_TQR;
    if (tqr && P->bits != P->rbits) return 0;
    /* tq{b}r{b} quantize stays on the warp kernel: one thread holding both stages spills registers and
     * measured slower on an H100 (tq4r4: 2.671 ms vs 2.034 ms) */
    if (tqr && quantize) return 0;
    if (P->kind != TQ_CODEC_BIN1 && !rtn && (P->bits < 1 || P->bits > 4)) return 0;
    if (quantize && P->kind != TQ_CODEC_BIN1 && !rtn && (P->lut_n[0] < 1 || (tqr && P->lut_n[1] < 1))) return 0;
    int ln[2] = {quantize ? P->lut_n[0] : 0, quantize && tqr ? P->lut_n[1] : 0};
    const size_t es = P->in_bf16 ? 2 : 4;
    const size_t rb = (quantize ? P->g * es : (tqr ? (size_t)P->g * 4 : P->g * es)) + 16;
    const size_t sm = tq_tpb_fixed_bytes(P->cols, tqr ? 2 : 1, ln) + (size_t)TQ_TPB_WARPS * (quantize ? 64 : 32) * rb;
    return sm <= TQ_GPU_SMEM_MAX ? sm : 0;
}

template <int D>
static tq_status tq_quant_tpb_go(const tq_gpu_params* P, size_t sm, cudaStream_t st)
{
    if (P->kind == TQ_CODEC_BIN1) return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_BIN1, 1, 1>, P, sm, st);
    if (P->kind == TQ_CODEC_RTN) {
        switch (P->bits) {
        case 2: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_RTN, 2, 1>, P, sm, st);
        case 3: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_RTN, 3, 1>, P, sm, st);
        case 4: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_RTN, 4, 1>, P, sm, st);
        default: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_RTN, 8, 1>, P, sm, st);
        }
    }
    const int L = P->kind == TQ_CODEC_TQ ? tq_tpb_lanes() : 1;
    if (L > 1) {
        /* L lanes per block: 32 / L blocks per warp task, so 1 / L of the staging rows per warp */
        const size_t rb = (size_t)D * (P->in_bf16 ? 2 : 4) + 16;
        const size_t smL = sm - (size_t)TQ_TPB_WARPS * (64 - 64 / L) * rb;
        const int bpt = 32 / L;
#define TQ_TPBL_GO(b) \
    (L == 4 ? tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_TQ, b, 4>, P, smL, st, bpt) \
            : tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_TQ, b, 2>, P, smL, st, bpt))
        switch (P->bits) {
        case 1: return TQ_TPBL_GO(1);
        case 2: return TQ_TPBL_GO(2);
        case 3: return TQ_TPBL_GO(3);
        default: return TQ_TPBL_GO(4);
        }
#undef TQ_TPBL_GO
    }
    if (P->kind == TQ_CODEC_TQ) {
        switch (P->bits) {
        case 1: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_TQ, 1, 1>, P, sm, st);
        case 2: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_TQ, 2, 1>, P, sm, st);
        case 3: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_TQ, 3, 1>, P, sm, st);
        default: return tq_tpb_launch(tq_quant_tpb_kernel<D, TQ_CODEC_TQ, 4, 1>, P, sm, st);
        }
    }
    return tq_fail(TQ_ERR_ARG, "codec %d: no TPB quantize kernel", P->kind); /* tq_tpb_smem excludes tqr */
}

template <int D>
static tq_status tq_deq_tpb_go(const tq_gpu_params* P, size_t sm, cudaStream_t st)
{
    if (P->kind == TQ_CODEC_BIN1) return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_BIN1, 1>, P, sm, st);
    if (P->kind == TQ_CODEC_RTN) {
        switch (P->bits) {
        case 2: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_RTN, 2>, P, sm, st);
        case 3: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_RTN, 3>, P, sm, st);
        case 4: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_RTN, 4>, P, sm, st);
        default: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_RTN, 8>, P, sm, st);
        }
    }
    if (P->kind == TQ_CODEC_TQ) {
        switch (P->bits) {
        case 1: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQ, 1>, P, sm, st);
        case 2: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQ, 2>, P, sm, st);
        case 3: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQ, 3>, P, sm, st);
        default: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQ, 4>, P, sm, st);
        }
    }
    switch (P->bits) {
    case 1: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQR, 1>, P, sm, st);
    case 2: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQR, 2>, P, sm, st);
    case 3: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQR, 3>, P, sm, st);
    default: return tq_tpb_launch(tq_deq_tpb_kernel<D, TQ_CODEC_TQR, 4>, P, sm, st);
    }
}


/* quant_rot_cuda / quant_plain_cuda / deq_*_cuda: pick the template instance for the group size. */
static tq_status tq_quant_cuda(cudaStream_t stream, const tq_gpu_params* P, const char* what)
{
    const int g = P->g;
    const size_t tsm = !P->tail_only ? tq_tpb_smem(P, 1) : 0;
    if (tsm) {
        tq_gpu_params* Q = (tq_gpu_params*)malloc(sizeof *Q);
        if (!Q) return tq_fail(TQ_ERR_NOMEM, "tensor %s: out of memory", what);
        *Q = *P;
        Q->tpb_vec = ((uintptr_t)P->in & 15) == 0 && ((size_t)P->cols * (P->in_bf16 ? 2 : 4)) % 16 == 0;
        tq_status rc = tq_quant_tpb_go<128>(Q, tsm, stream);
        if (rc == TQ_OK && P->tail) {
            Q->tail_only = 1;
            rc = tq_quant_cuda(stream, Q, what);
        }
        free(Q);
        return rc;
    }
    if (tq_gpu_is_rot(P->kind)) {
        const size_t sm = tq_rot_smem_bytes(P->cols, P->kind == TQ_CODEC_TQR ? 2 : 1);
#define TQ_QROT(E, NP)                                                                                 \
    (P->kind == TQ_CODEC_TQ    ? tq_gpu_launch(tq_quant_rot_kernel<E, TQ_CODEC_TQ, NP>, P, sm, stream, what)  \
     : P->kind == TQ_CODEC_TQR ? tq_gpu_launch(tq_quant_rot_kernel<E, TQ_CODEC_TQR, NP>, P, sm, stream, what) \
                               : tq_gpu_launch(tq_quant_rot_kernel<E, TQ_CODEC_BIN1, NP>, P, sm, stream, what))
        if (g == 64) return TQ_QROT(4, 2);
        if (g == 128) return TQ_QROT(8, 2);
        return TQ_QROT(8, 1);
#undef TQ_QROT
    }
    const size_t sm = P->kind == TQ_CODEC_RTN ? (size_t)TQ_GPU_WARPS * 256
                      : P->kind == TQ_CODEC_TER ? tq_align16((size_t)P->cols + 16) : 16;
    if (g == 64) return tq_gpu_launch(tq_quant_plain_kernel<2>, P, sm, stream, what);
    if (g == 128) return tq_gpu_launch(tq_quant_plain_kernel<4>, P, sm, stream, what);
    return tq_gpu_launch(tq_quant_plain_kernel<8>, P, sm, stream, what);
}

static tq_status tq_deq_cuda(cudaStream_t stream, const tq_gpu_params* P, const char* what)
{
    const int g = P->g;
    const size_t tsm = !P->tail_only ? tq_tpb_smem(P, 0) : 0;
    if (tsm) {
        tq_gpu_params* Q = (tq_gpu_params*)malloc(sizeof *Q);
        if (!Q) return tq_fail(TQ_ERR_NOMEM, "%s: out of memory", what);
        *Q = *P;
        Q->tpb_vec = ((uintptr_t)P->out & 15) == 0 && ((size_t)P->cols * (P->in_bf16 ? 2 : 4)) % 16 == 0;
        tq_status rc = tq_deq_tpb_go<128>(Q, tsm, stream);
        if (rc == TQ_OK && P->tail) {
            Q->tail_only = 1;
            rc = tq_deq_cuda(stream, Q, what);
        }
        free(Q);
        return rc;
    }
    if (tq_gpu_is_rot(P->kind)) {
        const size_t sm = tq_rot_smem_bytes(P->cols, P->kind == TQ_CODEC_TQR ? 2 : 1);
        if (g == 64) return tq_gpu_launch(tq_deq_rot_kernel<4, 2>, P, sm, stream, what);
        if (g == 128) return tq_gpu_launch(tq_deq_rot_kernel<8, 2>, P, sm, stream, what);
        return tq_gpu_launch(tq_deq_rot_kernel<8, 1>, P, sm, stream, what);
    }
    return tq_gpu_launch(tq_deq_plain_kernel, P, P->kind == TQ_CODEC_TER ? tq_align16((size_t)P->cols + 16) : 16,
                         stream, what);
}

/* Error flags: a small device buffer per call (stream-ordered allocation). */
static tq_status tq_err_alloc(cudaStream_t stream, unsigned long long** d_err)
{
    CUDA_CHECK(cudaMallocAsync((void**)d_err, 4 * sizeof(unsigned long long), stream));
    CUDA_CHECK(cudaMemsetAsync(*d_err, 0xff, 4 * sizeof(unsigned long long), stream));
    return TQ_OK;
}

static tq_status tq_err_fetch(cudaStream_t stream, unsigned long long* d_err, unsigned long long* h_err)
{
    CUDA_CHECK(cudaMemcpyAsync(h_err, d_err, 4 * sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaFreeAsync(d_err, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return TQ_OK;
}

/* row_base: added to the row numbers of error messages (the host-pointer version runs in row chunks). */
static tq_status tq_quantize_gpu_dev_rows(void* stream_, const void* d_w, tq_dtype wtype, tq_qtensor* q,
                                          uint8_t* const* d_parts, const char* what, int check, int64_t row_base)
{
    cudaStream_t stream = (cudaStream_t)stream_;
    if (!what) what = "(unnamed tensor)";
    if (!q || !d_parts || (!d_w && q->rows > 0)) return tq_fail(TQ_ERR_ARG, "tq_quantize_gpu_dev: NULL argument");
    if (wtype != TQ_F32 && wtype != TQ_BF16)
        return tq_fail(TQ_ERR_ARG, "tensor %s: the GPU quantizer takes fp32 or bf16 input", what);
    if (!tq_gpu_available()) return tq_fail(TQ_ERR_NOGPU, "quantize %s on GPU: no CUDA device", what);
    tq_gpu_params* P = (tq_gpu_params*)malloc(sizeof *P);
    if (!P) return tq_fail(TQ_ERR_NOMEM, "tensor %s: out of memory", what);
    tq_status rc = tq_gpu_params_init(P, q, d_parts, 1, what);
    unsigned long long herr[4] = {TQ_GPU_NOERR, TQ_GPU_NOERR, TQ_GPU_NOERR, TQ_GPU_NOERR};
    unsigned long long* d_err = NULL;
    if (rc != TQ_OK) goto out;
    P->rows = q->rows;
    P->code_bytes = (size_t)q->cols + 16;
    P->in = d_w;
    P->in_bf16 = wtype == TQ_BF16;
    P->write_cb = 1;
    /* host copies of the codebooks, written exactly as the reference writes them */
    for (int st = 0; st < 2; st++) {
        const int pi = P->cb_part[st];
        if (pi < 0 || !q->part[pi].data || !(q->codec.kind == TQ_CODEC_TQ || q->codec.kind == TQ_CODEC_TQR)) continue;
        const int n = 1 << (st ? q->codec.rbits : q->codec.bits);
        for (int i = 0; i < P->ndist; i++) memcpy(q->part[pi].data + (size_t)4 * n * i, P->cbs[st].cb[i], (size_t)4 * n);
    }
    if (q->rows == 0) {
        /* no rows: still write the per-tensor parts */
        for (int st = 0; st < 2; st++) {
            const int pi = P->cb_part[st];
            if (pi < 0 || !(q->codec.kind == TQ_CODEC_TQ || q->codec.kind == TQ_CODEC_TQR)) continue;
            const int n = 1 << (st ? q->codec.rbits : q->codec.bits);
            for (int i = 0; i < P->ndist; i++)
                CUDA_CHECK_GOTO(cudaMemcpyAsync(d_parts[pi] + (size_t)4 * n * i, P->cbs[st].cb[i], (size_t)4 * n,
                                                cudaMemcpyHostToDevice, stream), out);
        }
        CUDA_CHECK_GOTO(cudaStreamSynchronize(stream), out);
        goto out;
    }
    if (check) TQ_CHECK_GOTO(tq_err_alloc(stream, &d_err), out);
    P->err = d_err;
    TQ_CHECK_GOTO(tq_quant_cuda(stream, P, what), out);
    if (!check) goto out;
    TQ_CHECK_GOTO(tq_err_fetch(stream, d_err, herr), out);
    d_err = NULL;
    {
        const unsigned long long cols = (unsigned long long)q->cols;
        const unsigned long long rn = herr[TQ_GPU_ERR_NAN], ro = herr[TQ_GPU_ERR_OVF];
        if (rn != TQ_GPU_NOERR && (ro == TQ_GPU_NOERR || rn / cols <= ro / cols)) {
            rc = tq_fail(TQ_ERR_NUMERIC,
                         "tensor %s row %llu col %llu: value is NaN or Inf; the input is corrupt or overflowed "
                         "(check the checkpoint / the previous stage)",
                         what, rn / cols + (unsigned long long)row_base, rn % cols);
        } else if (ro != TQ_GPU_NOERR) {
            rc = tq_fail(TQ_ERR_NUMERIC,
                         "tensor %s row %llu col %llu: a group norm/scale/value exceeds the fp16 range (65504) of "
                         "codec %s; store this tensor as bf16 or int8, or rescale it",
                         what, ro / cols + (unsigned long long)row_base, ro % cols, q->codec.name);
        }
    }
out:
    if (d_err) cudaFreeAsync(d_err, stream);
    free(P);
    return rc;
}

extern "C" tq_status tq_quantize_gpu_dev(void* stream, const void* d_w, tq_dtype wtype, tq_qtensor* q,
                                         uint8_t* const* d_parts, const char* what, int check)
{
    return tq_quantize_gpu_dev_rows(stream, d_w, wtype, q, d_parts, what, check, 0);
}

extern "C" tq_status tq_dequantize_gpu_dev(void* stream_, const tq_qtensor* q, const uint8_t* const* d_parts,
                                           int64_t row0, int64_t nrows, void* d_out, tq_dtype otype, int check)
{
    cudaStream_t stream = (cudaStream_t)stream_;
    if (!q || !d_parts || (!d_out && nrows > 0)) return tq_fail(TQ_ERR_ARG, "tq_dequantize_gpu_dev: NULL argument");
    if (otype != TQ_F32 && otype != TQ_BF16)
        return tq_fail(TQ_ERR_ARG, "dequantize on GPU: output must be fp32 or bf16");
    if (row0 < 0 || nrows < 0 || row0 + nrows > q->rows)
        return tq_fail(TQ_ERR_ARG, "dequantize: rows [%lld, %lld) outside the tensor's %lld rows", (long long)row0,
                       (long long)(row0 + nrows), (long long)q->rows);
    if (!tq_gpu_available()) return tq_fail(TQ_ERR_NOGPU, "dequantize on GPU: no CUDA device");
    if (nrows == 0) return TQ_OK;
    tq_gpu_params* P = (tq_gpu_params*)malloc(sizeof *P);
    if (!P) return tq_fail(TQ_ERR_NOMEM, "dequantize: out of memory");
    tq_status rc = tq_gpu_params_init(P, q, (uint8_t* const*)d_parts, 0, "(dequantize)");
    unsigned long long herr[4] = {TQ_GPU_NOERR, TQ_GPU_NOERR, TQ_GPU_NOERR, TQ_GPU_NOERR};
    unsigned long long* d_err = NULL;
    if (rc != TQ_OK) goto out;
    P->rows = nrows;
    P->row0 = row0;
    {
        size_t cbm = q->part[0].row_bytes;
        if (q->codec.kind == TQ_CODEC_TQR && q->part[3].row_bytes > cbm) cbm = q->part[3].row_bytes;
        P->code_bytes = cbm + 16;
    }
    P->out = d_out;
    P->in_bf16 = otype == TQ_BF16;
    if (check) TQ_CHECK_GOTO(tq_err_alloc(stream, &d_err), out);
    P->err = d_err;
    TQ_CHECK_GOTO(tq_deq_cuda(stream, P, "(dequantize)"), out);
    if (!check) goto out;
    TQ_CHECK_GOTO(tq_err_fetch(stream, d_err, herr), out);
    d_err = NULL;
    if (herr[TQ_GPU_ERR_CORRUPT] != TQ_GPU_NOERR)
        rc = tq_fail(TQ_ERR_CORRUPT,
                     "dequantize (codec %s) row %llu: a norm/scale part or the codebook holds NaN/Inf (corrupt "
                     "artifact)",
                     q->codec.name, herr[TQ_GPU_ERR_CORRUPT] / (unsigned long long)q->cols);
out:
    if (d_err) cudaFreeAsync(d_err, stream);
    free(P);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// host-pointer entry points (codec.h): staged through device buffers kept between calls, in row chunks
// of at most TQ_GPU_CHUNK_BYTES of fp32 so device memory stays bounded.

#define TQ_GPU_CHUNK_BYTES ((size_t)512 << 20)

static pthread_mutex_t tq_gpu_mu = PTHREAD_MUTEX_INITIALIZER;
static void* tq_gpu_buf[TQ_QT_MAX_PARTS + 1];
static size_t tq_gpu_cap[TQ_QT_MAX_PARTS + 1];

static tq_status tq_gpu_reserve(int slot, size_t bytes)
{
    if (bytes <= tq_gpu_cap[slot]) return TQ_OK;
    if (tq_gpu_buf[slot]) cudaFree(tq_gpu_buf[slot]);
    tq_gpu_buf[slot] = NULL;
    tq_gpu_cap[slot] = 0;
    CUDA_CHECK(cudaMalloc(&tq_gpu_buf[slot], bytes ? bytes : 16));
    tq_gpu_cap[slot] = bytes;
    return TQ_OK;
}

extern "C" void tq_gpu_release_buffers(void)
{
    pthread_mutex_lock(&tq_gpu_mu);
    for (int i = 0; i <= TQ_QT_MAX_PARTS; i++) {
        if (tq_gpu_buf[i]) cudaFree(tq_gpu_buf[i]);
        tq_gpu_buf[i] = NULL;
        tq_gpu_cap[i] = 0;
    }
    pthread_mutex_unlock(&tq_gpu_mu);
}

extern "C" int tq_gpu_available(void)
{
    static int cached = -1;
    if (cached < 0) {
        int n = 0;
        cached = (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) ? 1 : 0;
        if (!cached) cudaGetLastError();
    }
    return cached;
}

static int64_t tq_gpu_chunk_rows(int64_t cols)
{
    int64_t r = (int64_t)(TQ_GPU_CHUNK_BYTES / ((size_t)cols * sizeof(float)));
    return r < 1 ? 1 : r;
}

/* A view of q restricted to rows [r0, r0 + n): same codec, per-row part sizes scaled. */
static void tq_qtensor_rows_view(tq_qtensor* v, const tq_qtensor* q, int64_t n)
{
    *v = *q;
    v->rows = n;
    for (int i = 0; i < q->nparts; i++)
        if (q->part[i].row_bytes) v->part[i].bytes = q->part[i].row_bytes * (size_t)n;
}

static tq_status tq_quantize_gpu_locked(const float* w, tq_qtensor* q, const char* what)
{
    const int64_t cols = q->cols, chunk = tq_gpu_chunk_rows(cols);
    const int64_t crow = q->rows < chunk ? q->rows : chunk;
    TQ_FORWARD(tq_gpu_reserve(TQ_QT_MAX_PARTS, (size_t)crow * (size_t)cols * sizeof(float)));
    uint8_t* d_parts[TQ_QT_MAX_PARTS] = {0};
    for (int i = 0; i < q->nparts; i++) {
        const size_t b = q->part[i].row_bytes ? q->part[i].row_bytes * (size_t)crow : q->part[i].bytes;
        TQ_FORWARD(tq_gpu_reserve(i, b));
        d_parts[i] = (uint8_t*)tq_gpu_buf[i];
    }
    if (q->rows == 0) return tq_quantize_gpu_dev_rows(NULL, NULL, TQ_F32, q, d_parts, what, 1, 0);
    for (int64_t r0 = 0; r0 < q->rows; r0 += chunk) {
        const int64_t n = q->rows - r0 < chunk ? q->rows - r0 : chunk;
        tq_qtensor v;
        tq_qtensor_rows_view(&v, q, n);
        CUDA_CHECK(cudaMemcpy(tq_gpu_buf[TQ_QT_MAX_PARTS], w + (size_t)r0 * (size_t)cols,
                              (size_t)n * (size_t)cols * sizeof(float), cudaMemcpyHostToDevice));
        TQ_FORWARD(tq_quantize_gpu_dev_rows(NULL, tq_gpu_buf[TQ_QT_MAX_PARTS], TQ_F32, &v, d_parts, what, 1, r0));
        for (int i = 0; i < q->nparts; i++) {
            if (!q->part[i].row_bytes) continue;
            CUDA_CHECK(cudaMemcpy(q->part[i].data + (size_t)r0 * q->part[i].row_bytes, d_parts[i],
                                  q->part[i].row_bytes * (size_t)n, cudaMemcpyDeviceToHost));
        }
    }
    return TQ_OK;
}

extern "C" tq_status tq_quantize_gpu(const float* w, tq_qtensor* q, const char* what)
{
    if (!what) what = "(unnamed tensor)";
    if (!q || (!w && q->rows > 0)) return tq_fail(TQ_ERR_ARG, "tq_quantize_gpu: NULL argument");
    if (!tq_gpu_available()) return tq_fail(TQ_ERR_NOGPU, "quantize %s on GPU: no CUDA device", what);
    for (int i = 0; i < q->nparts; i++)
        if (!q->part[i].data && q->part[i].bytes)
            return tq_fail(TQ_ERR_ARG, "tensor %s: part '%s' has no data (allocate with tq_qtensor_alloc)", what,
                           q->part[i].name);
    pthread_mutex_lock(&tq_gpu_mu);
    tq_status rc = tq_quantize_gpu_locked(w, q, what);
    pthread_mutex_unlock(&tq_gpu_mu);
    return rc;
}

static tq_status tq_dequantize_gpu_locked(const tq_qtensor* q, void* out, tq_dtype otype)
{
    const int64_t cols = q->cols, chunk = tq_gpu_chunk_rows(cols);
    const int64_t crow = q->rows < chunk ? q->rows : chunk;
    const size_t es = otype == TQ_BF16 ? 2 : 4;
    TQ_FORWARD(tq_gpu_reserve(TQ_QT_MAX_PARTS, (size_t)crow * (size_t)cols * es));
    uint8_t* d_parts[TQ_QT_MAX_PARTS] = {0};
    for (int i = 0; i < q->nparts; i++) {
        const size_t b = q->part[i].row_bytes ? q->part[i].row_bytes * (size_t)crow : q->part[i].bytes;
        TQ_FORWARD(tq_gpu_reserve(i, b));
        d_parts[i] = (uint8_t*)tq_gpu_buf[i];
        if (!q->part[i].row_bytes && q->part[i].bytes)
            CUDA_CHECK(cudaMemcpy(d_parts[i], q->part[i].data, q->part[i].bytes, cudaMemcpyHostToDevice));
    }
    for (int64_t r0 = 0; r0 < q->rows; r0 += chunk) {
        const int64_t n = q->rows - r0 < chunk ? q->rows - r0 : chunk;
        tq_qtensor v;
        tq_qtensor_rows_view(&v, q, n);
        for (int i = 0; i < q->nparts; i++) {
            if (!q->part[i].row_bytes) continue;
            CUDA_CHECK(cudaMemcpy(d_parts[i], q->part[i].data + (size_t)r0 * q->part[i].row_bytes,
                                  q->part[i].row_bytes * (size_t)n, cudaMemcpyHostToDevice));
        }
        tq_status rc = tq_dequantize_gpu_dev(NULL, &v, d_parts, 0, n, tq_gpu_buf[TQ_QT_MAX_PARTS], otype, 1);
        if (rc != TQ_OK) return rc;
        CUDA_CHECK(cudaMemcpy((uint8_t*)out + (size_t)r0 * (size_t)cols * es, tq_gpu_buf[TQ_QT_MAX_PARTS],
                              (size_t)n * (size_t)cols * es, cudaMemcpyDeviceToHost));
    }
    return TQ_OK;
}

static tq_status tq_dequantize_gpu_any(const tq_qtensor* q, void* out, tq_dtype otype)
{
    if (!q || (!out && q->rows > 0)) return tq_fail(TQ_ERR_ARG, "tq_dequantize_gpu: NULL argument");
    if (!tq_gpu_available()) return tq_fail(TQ_ERR_NOGPU, "dequantize on GPU: no CUDA device");
    for (int i = 0; i < q->nparts; i++)
        if (!q->part[i].data && q->part[i].bytes)
            return tq_fail(TQ_ERR_ARG, "dequantize: part '%s' has no data", q->part[i].name);
    if (q->rows == 0) return TQ_OK;
    pthread_mutex_lock(&tq_gpu_mu);
    tq_status rc = tq_dequantize_gpu_locked(q, out, otype);
    pthread_mutex_unlock(&tq_gpu_mu);
    return rc;
}

extern "C" tq_status tq_dequantize_gpu(const tq_qtensor* q, float* out)
{
    return tq_dequantize_gpu_any(q, out, TQ_F32);
}

extern "C" tq_status tq_dequantize_bf16_gpu(const tq_qtensor* q, uint16_t* out)
{
    return tq_dequantize_gpu_any(q, out, TQ_BF16);
}
