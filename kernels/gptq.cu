/* gptq.cu — GPTQ error compensation on the GPU (kernels/linalg_gpu.h), the algorithm of gptq_ref.c
 * (see gptq.h) with the heavy parts on the device, all in double:
 *   host:   the codec's own quantizer (fixed parameters: tq norms, bin1 scales, int8 row scales,
 *           codebooks), W and H in the rotated domain for tq/bin1, dead columns, dampening, act-order
 *           permutation — the same steps and order as the reference;
 *   device: U = chol(H⁻¹) upper with cuSOLVER (Dpotrf upper, Dpotri, mirror, Dpotrf lower), then per
 *           lazy block of B columns: the block's columns gathered column-major (gptq_gather_kernel),
 *           the column loop (gptq_sweep_kernel: one thread per row, rtn group grids fixed when the
 *           sweep reaches a group's first column, codes, errors, updates within the block), and the
 *           update of every later column as one cublasDgemm  W[:, i2:] -= E · U[i1:i2, i2:];
 *   host:   codes (and rtn scale/min) packed into the codec's parts exactly as the reference does.
 * The scalar quantizers mirror the reference's fp32 expressions through gpu_common.cuh (no flush to
 * zero, no contraction); the double updates are summed in another order than OpenBLAS, so codes can
 * differ from the CPU's where a value lies close to a decision boundary.
 * Row-major W [R x N] seen by cuBLAS (column-major) is N x R with ld N; U row-major is Uᵀ column-major. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "codec.h"          /* defines: tq_qtensor, tq_quantize_ref, tq_gpu_available */
#include "codec_internal.h" /* defines: tq_pack_bits */
#include "dtype.h"          /* defines: tq_f16_to_f32 */
#include "gptq.h"
#include "gptq_internal.h" /* defines: tq_gptq_prepare */
#include "hadamard.h" /* defines: tq_rot_signs, tq_rot_block, tq_rot_nblocks, tq_rot_block_sizes */
#include "linalg_gpu.h"
#include "status.h"
}
#include "gpu_common.cuh" /* defines: CUDA_CHECK_GOTO, CUBLAS_CHECK_GOTO, tq_f* IEEE wrappers */

#define GQ_THREADS 64 /* rows per thread block of the sweep: small, so that few rows still spread over the SMs */

#define CUSOLVER_CHECK_GOTO(expr, label)                                                           \
    do {                                                                                           \
        cusolverStatus_t const s_ = (expr);                                                        \
        if (s_ != CUSOLVER_STATUS_SUCCESS) {                                                       \
            rc = tq_fail(TQ_ERR_CUDA, "cuSOLVER error %d in %s at %s:%d: %s", (int)s_, __func__,    \
                         __FILE__, __LINE__, #expr);                                               \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

/* launch, then check the launch (configuration errors) */
#define LAUNCH_CHECK_GOTO(label) CUDA_CHECK_GOTO(cudaGetLastError(), label)

// ------------------------------------------------------------------------------------------------
// handles, kept between calls

static pthread_mutex_t gq_mu = PTHREAD_MUTEX_INITIALIZER;
static cublasHandle_t gq_blas;
static cusolverDnHandle_t gq_solver;
static int gq_blas_ok = 0, gq_solver_ok = 0;

void tq_gptq_gpu_release_state(void)
{
    pthread_mutex_lock(&gq_mu);
    if (gq_blas_ok) cublasDestroy(gq_blas);
    if (gq_solver_ok) cusolverDnDestroy(gq_solver);
    gq_blas_ok = gq_solver_ok = 0;
    pthread_mutex_unlock(&gq_mu);
}

// ------------------------------------------------------------------------------------------------
// device code

typedef struct {
    int kind;      /* tq_codec_kind */
    int maxq;      /* 2^bits - 1 (int8: 255, unused) */
    int act_order;
    int64_t R, N, ngrp;
    float cb[16][16]; /* tq codebooks by distinct block size */
    float bnd[16][15];
} gq_params;

/* W1T[j*R + r] = W[r*N + i1 + j] for j < nbk */
__global__ void gptq_gather_kernel(const double* __restrict__ W, double* __restrict__ W1T, int64_t R, int64_t N,
                                   int64_t i1, int64_t nbk)
{
    const int64_t total = R * nbk;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = t % R, j = t / R;
        W1T[t] = W[r * N + i1 + j];
    }
}

/* Column-major n x n: copy the upper triangle into the lower one (mirror = 1) or zero the strict upper
 * triangle (mirror = 0). */
__global__ void gptq_tri_kernel(double* __restrict__ a, int64_t n, int mirror)
{
    const int64_t total = n * n;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (int64_t)gridDim.x * blockDim.x) {
        const int64_t i = t % n, j = t / n; /* element (i, j) at i + j*n */
        if (i < j) {
            if (mirror) a[j + i * n] = a[i + j * n];
            else a[i + j * n] = 0.0;
        }
    }
}

/* Quantize v of (row r, original column oc) with the fixed parameters: code, *q the dequantized value.
 * Mirrors quant1 of gptq_ref.c expression by expression. */
__device__ __forceinline__ int gq_quant1(const gq_params& P, const uint16_t* __restrict__ sc16,
                                         const uint16_t* __restrict__ mn16, const float* __restrict__ sc32,
                                         const int64_t* __restrict__ grp_of, const int* __restrict__ cb_of, int64_t r,
                                         int64_t oc, double v, double* q)
{
    if (P.kind == TQ_CODEC_RTN) {
        const int64_t k = grp_of[oc];
        const float scf = tq_f16_to_f32_d(sc16[r * P.ngrp + k]);
        const float mnf = tq_f16_to_f32_d(mn16[r * P.ngrp + k]);
        int c = 0;
        if (tq_fgt(scf, 0.0f)) {
            const float t = tq_ffloor(tq_fadd(tq_fdiv(tq_fsub(tq_d2f(v), mnf), scf), 0.5f));
            c = tq_fle(t, 0.0f) ? 0 : tq_fge(t, (float)P.maxq) ? P.maxq : (int)t;
        }
        *q = tq_f2d(tq_fadd(mnf, tq_fmul((float)c, scf)));
        return c;
    }
    if (P.kind == TQ_CODEC_INT8) {
        const float scale = sc32[r];
        int c = 0;
        if (tq_fgt(scale, 0.0f)) {
            const float f = roundf(tq_fdiv(tq_d2f(v), scale));
            c = tq_fgt(f, 127.0f) ? 127 : tq_flt(f, -127.0f) ? -127 : (int)f;
        }
        *q = tq_f2d(tq_fmul((float)c, scale));
        return c;
    }
    if (P.kind == TQ_CODEC_TQ) {
        const int64_t k = grp_of[oc];
        const float nf = tq_f16_to_f32_d(sc16[r * P.ngrp + k]);
        const int ci = cb_of[k];
        int c = 0;
        if ((__float_as_uint(nf) & 0x7fffffffu) != 0u) {
            const float u = tq_fdiv(tq_d2f(v), nf);
            for (int t = 0; t < P.maxq; t++) c += tq_fgt(u, P.bnd[ci][t]);
        }
        *q = tq_f2d(tq_fmul(nf, P.cb[ci][c]));
        return c;
    }
    if (P.kind == TQ_CODEC_BIN1) {
        const int64_t k = grp_of[oc];
        const float m = tq_f16_to_f32_d(sc16[r * P.ngrp + k]);
        const int c = v >= 0.0;
        *q = tq_f2d(c ? m : tq_fsign(m, 1u));
        return c;
    }
    *q = v;
    return 0;
}

/* The column loop of one lazy block [i1, i2): one thread per row r. W1T [nbk x R] holds the block's
 * current weights (updated in place), E1T [nbk x R] receives the scaled errors, codesT [N x R] the codes
 * by original column. rtn without act-order: a group's scale/min are set when its first column comes,
 * from the current weights (block part from W1T, the rest from W). fp16 overflow of a group's scale/min
 * -> *err = min(r * ngrp + k). */
__global__ void gptq_sweep_kernel(gq_params P, const double* __restrict__ W, double* __restrict__ W1T,
                                  double* __restrict__ E1T, const double* __restrict__ U,
                                  const int64_t* __restrict__ perm, const int64_t* __restrict__ grp_of,
                                  const int64_t* __restrict__ grp_start, const int* __restrict__ cb_of,
                                  uint16_t* __restrict__ sc16, uint16_t* __restrict__ mn16,
                                  const float* __restrict__ sc32, uint8_t* __restrict__ codesT,
                                  unsigned long long* __restrict__ err, int64_t i1, int64_t i2)
{
    const int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= P.R) return;
    const int64_t R = P.R, N = P.N, nbk = i2 - i1;
    for (int64_t i = 0; i < nbk; i++) {
        const int64_t p = i1 + i, oc = perm[p];
        if (P.kind == TQ_CODEC_RTN && !P.act_order && oc == grp_start[grp_of[oc]]) {
            const int64_t k = grp_of[oc], ge = grp_start[k + 1];
            float lo = 0.0f, hi = 0.0f;
            for (int64_t j = oc; j < ge; j++) {
                const double v = j < i2 ? W1T[(j - i1) * R + r] : W[r * N + j];
                const float f = tq_d2f(v);
                if (j == oc) {
                    lo = hi = f;
                } else {
                    if (tq_flt(f, lo)) lo = f;
                    if (tq_fgt(f, hi)) hi = f;
                }
            }
            const float scr = tq_fdiv(tq_fsub(hi, lo), (float)P.maxq);
            const uint16_t hs = tq_f32_to_f16_d(scr), hm = tq_f32_to_f16_d(lo);
            if ((hs & 0x7c00u) == 0x7c00u || (hm & 0x7c00u) == 0x7c00u)
                atomicMin(err, (unsigned long long)(r * P.ngrp + k));
            sc16[r * P.ngrp + k] = hs;
            mn16[r * P.ngrp + k] = hm;
        }
        const double* urow = U + p * N + i1;
        const double dd = urow[i];
        const double wv = W1T[i * R + r];
        double qv;
        const int c = gq_quant1(P, sc16, mn16, sc32, grp_of, cb_of, r, oc, wv, &qv);
        codesT[oc * R + r] = (uint8_t)c;
        const double e = (wv - qv) / dd;
        for (int64_t j = i + 1; j < nbk; j++) W1T[j * R + r] -= e * urow[j];
        E1T[i * R + r] = e;
    }
}

// ------------------------------------------------------------------------------------------------
// host helpers

static int gq_grid(int64_t total, int threads)
{
    int64_t b = (total + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 16) b = 65535 * 16; /* grid-stride loops cover the rest */
    return (int)b;
}

/* Device part: U = chol(H⁻¹) upper in dH, the blocked sweep; codes to codesT. Locked by the caller. */
static tq_status gq_device_run(gq_params* P, int B, double* dH, double* dW, double* dW1T, double* dE1T,
                               const int64_t* dperm, const int64_t* dgrp_of, const int64_t* dgrp_start,
                               const int* dcb_of, uint16_t* dsc16, uint16_t* dmn16, const float* dsc32,
                               uint8_t* dcodesT, unsigned long long* derr, const char* what)
{
    tq_status rc = TQ_OK;
    const int64_t R = P->R, N = P->N;
    const int n = (int)N;
    int* dinfo = NULL;
    double* dwork = NULL;
    int info = 0, lw1 = 0, lw2 = 0, lw3 = 0;
    const double minus1 = -1.0, one = 1.0;
    if (!gq_blas_ok) {
        CUBLAS_CHECK_GOTO(cublasCreate(&gq_blas), out);
        gq_blas_ok = 1;
    }
    if (!gq_solver_ok) {
        CUSOLVER_CHECK_GOTO(cusolverDnCreate(&gq_solver), out);
        gq_solver_ok = 1;
    }
    CUDA_CHECK_GOTO(cudaMalloc((void**)&dinfo, sizeof(int)), out);
    CUSOLVER_CHECK_GOTO(cusolverDnDpotrf_bufferSize(gq_solver, CUBLAS_FILL_MODE_UPPER, n, dH, n, &lw1), out);
    CUSOLVER_CHECK_GOTO(cusolverDnDpotri_bufferSize(gq_solver, CUBLAS_FILL_MODE_UPPER, n, dH, n, &lw2), out);
    CUSOLVER_CHECK_GOTO(cusolverDnDpotrf_bufferSize(gq_solver, CUBLAS_FILL_MODE_LOWER, n, dH, n, &lw3), out);
    {
        int lw = lw1 > lw2 ? lw1 : lw2;
        if (lw3 > lw) lw = lw3;
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dwork, (size_t)(lw > 0 ? lw : 1) * sizeof(double)), out);
        /* H symmetric: its row-major array is also column-major H; factor the upper triangle */
        CUSOLVER_CHECK_GOTO(cusolverDnDpotrf(gq_solver, CUBLAS_FILL_MODE_UPPER, n, dH, n, dwork, lw, dinfo), out);
        CUDA_CHECK_GOTO(cudaMemcpy(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost), out);
        TQ_GOTO_FAIL(info != 0, TQ_ERR_NUMERIC, out,
                     "gptq %s: H is not positive definite even after dampening (cuSOLVER potrf info %d); "
                     "raise the dampening or use more calibration tokens",
                     what, info);
        CUSOLVER_CHECK_GOTO(cusolverDnDpotri(gq_solver, CUBLAS_FILL_MODE_UPPER, n, dH, n, dwork, lw, dinfo), out);
        CUDA_CHECK_GOTO(cudaMemcpy(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost), out);
        TQ_GOTO_FAIL(info != 0, TQ_ERR_NUMERIC, out, "gptq %s: inverting H failed (cuSOLVER potri info %d)", what,
                     info);
        gptq_tri_kernel<<<gq_grid(N * N, 256), 256>>>(dH, N, 1);
        LAUNCH_CHECK_GOTO(out);
        /* column-major lower L with H⁻¹ = L·Lᵀ; read row-major it is U = Lᵀ, UᵀU = H⁻¹ */
        CUSOLVER_CHECK_GOTO(cusolverDnDpotrf(gq_solver, CUBLAS_FILL_MODE_LOWER, n, dH, n, dwork, lw, dinfo), out);
        CUDA_CHECK_GOTO(cudaMemcpy(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost), out);
        TQ_GOTO_FAIL(info != 0, TQ_ERR_NUMERIC, out, "gptq %s: Cholesky of H^-1 failed (cuSOLVER potrf info %d)",
                     what, info);
        gptq_tri_kernel<<<gq_grid(N * N, 256), 256>>>(dH, N, 0);
        LAUNCH_CHECK_GOTO(out);
    }
    for (int64_t i1 = 0; i1 < N; i1 += B) {
        const int64_t i2 = i1 + B < N ? i1 + B : N, nbk = i2 - i1;
        gptq_gather_kernel<<<gq_grid(R * nbk, 256), 256>>>(dW, dW1T, R, N, i1, nbk);
        LAUNCH_CHECK_GOTO(out);
        gptq_sweep_kernel<<<(unsigned)((R + GQ_THREADS - 1) / GQ_THREADS), GQ_THREADS>>>(
            *P, dW, dW1T, dE1T, dH, dperm, dgrp_of, dgrp_start, dcb_of, dsc16, dmn16, dsc32, dcodesT, derr, i1, i2);
        LAUNCH_CHECK_GOTO(out);
        if (i2 < N) {
            /* column-major: W'[N-i2 x R] -= U'[N-i2 x nbk] · (E1T as R x nbk)ᵀ */
            CUBLAS_CHECK_GOTO(cublasDgemm(gq_blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)(N - i2), (int)R, (int)nbk, &minus1,
                                          dH + i1 * N + i2, n, dE1T, (int)R, &one, dW + i2, n),
                              out);
        }
    }
    CUDA_CHECK_GOTO(cudaDeviceSynchronize(), out);
out:
    if (dinfo) cudaFree(dinfo);
    if (dwork) cudaFree(dwork);
    return rc;
}

// ------------------------------------------------------------------------------------------------

extern "C" tq_status tq_gptq_quantize_gpu(const float* w, const double* h, const tq_gptq_opts* o, tq_qtensor* q,
                                          const char* what)
{
    if (!what) what = "(unnamed tensor)";
    if (!w || !h || !q) return tq_fail(TQ_ERR_ARG, "gptq %s: NULL argument", what);
    if (!tq_gptq_supports(&q->codec))
        return tq_fail(TQ_ERR_ARG, "gptq %s: codec %s is not supported by GPTQ (use rtn2..8, int8, tq1..4, bin1)", what,
                       q->codec.name);
    if (!tq_gpu_available()) return tq_fail(TQ_ERR_NOGPU, "gptq %s on GPU: no CUDA device", what);
    tq_gptq_opts def;
    tq_gptq_opts_default(&def);
    if (!o) o = &def;
    const int64_t R = q->rows, N = q->cols;
    if (R <= 0 || N <= 0 || N > 1 << 20) return tq_fail(TQ_ERR_ARG, "gptq %s: bad shape", what);
    if (R > 2147483647 || N * N > ((int64_t)1 << 40)) return tq_fail(TQ_ERR_ARG, "gptq %s: too large for the GPU path", what);
    const int B = o->block > 0 ? o->block : 128;
    const double damp = o->damp > 0 ? o->damp : 0.01;
    const int rotated = q->codec.kind == TQ_CODEC_TQ || q->codec.kind == TQ_CODEC_BIN1;
    const tq_codec_kind kind = q->codec.kind;
    const int g = q->codec.group;
    const int bits = kind == TQ_CODEC_INT8 ? 8 : q->codec.bits;
    tq_status rc = TQ_OK;
    gq_params* P = NULL;
    int64_t ngrp = 0;
    int64_t *grp_of = NULL, *grp_start = NULL, *perm = NULL;
    int* cb_of = NULL;
    uint16_t *sc16 = NULL, *mn16 = NULL;
    float *sc32 = NULL, *signs = NULL;
    double *W = NULL, *Hm = NULL, *tmp = NULL;
    uint8_t *codesT = NULL, *codes = NULL;
    /* device */
    double *dH = NULL, *dW = NULL, *dW1T = NULL, *dE1T = NULL;
    int64_t *dperm = NULL, *dgrp_of = NULL, *dgrp_start = NULL;
    int* dcb_of = NULL;
    uint16_t *dsc16 = NULL, *dmn16 = NULL;
    float* dsc32 = NULL;
    uint8_t* dcodesT = NULL;
    unsigned long long* derr = NULL;
    unsigned long long herr = ~0ull;
    int locked = 0;
    const tq_qpart* pc = NULL;

    /* 1. the codec's own quantization: every part filled, fixed parameters read back */
    TQ_CHECK_GOTO(tq_quantize_ref(w, q, what), out);
    P = (gq_params*)calloc(1, sizeof *P);
    TQ_GOTO_FAIL(!P, TQ_ERR_NOMEM, out, "gptq %s: out of memory", what);
    P->kind = (int)kind;
    P->maxq = (1 << bits) - 1;
    P->act_order = o->act_order ? 1 : 0;
    P->R = R;
    P->N = N;
    if (rotated) ngrp = tq_rot_nblocks(N, g);
    else if (kind == TQ_CODEC_RTN) ngrp = (N + g - 1) / g;
    else ngrp = 1;
    P->ngrp = ngrp;
    grp_of = (int64_t*)malloc((size_t)N * sizeof(int64_t));
    grp_start = (int64_t*)malloc((size_t)(ngrp + 1) * sizeof(int64_t));
    cb_of = (int*)calloc((size_t)ngrp, sizeof(int));
    sc16 = (uint16_t*)calloc((size_t)(R * ngrp), sizeof(uint16_t));
    mn16 = (uint16_t*)calloc((size_t)(R * ngrp), sizeof(uint16_t));
    sc32 = (float*)calloc((size_t)R, sizeof(float));
    W = (double*)malloc((size_t)R * (size_t)N * sizeof(double));
    Hm = (double*)malloc((size_t)N * (size_t)N * sizeof(double));
    tmp = (double*)malloc((size_t)N * sizeof(double));
    codesT = (uint8_t*)malloc((size_t)R * (size_t)N);
    codes = (uint8_t*)malloc((size_t)N);
    perm = (int64_t*)malloc((size_t)N * sizeof(int64_t));
    TQ_GOTO_FAIL(!grp_of || !grp_start || !cb_of || !sc16 || !mn16 || !sc32 || !W || !Hm || !tmp || !codesT || !codes ||
                     !perm,
                 TQ_ERR_NOMEM, out, "gptq %s: out of memory (%lld x %lld)", what, (long long)R, (long long)N);
    for (int64_t k = 0; k < ngrp; k++) {
        int64_t s, e;
        if (rotated) {
            int d;
            tq_rot_block(N, g, k, &s, &d);
            e = s + d;
        } else if (kind == TQ_CODEC_RTN) {
            s = k * g;
            e = s + g < N ? s + g : N;
        } else {
            s = 0;
            e = N;
        }
        grp_start[k] = s;
        for (int64_t j = s; j < e; j++) grp_of[j] = k;
    }
    grp_start[ngrp] = N;
    pc = tq_qtensor_part(q, "codes");
    TQ_GOTO_FAIL(!pc, TQ_ERR_ARG, out, "gptq %s: codec %s has no 'codes' part", what, q->codec.name);
    if (rotated) {
        const tq_qpart* pn = tq_qtensor_part(q, kind == TQ_CODEC_TQ ? "norms" : "scales");
        TQ_GOTO_FAIL(!pn || pn->row_bytes != 2 * (size_t)ngrp, TQ_ERR_ARG, out, "gptq %s: unexpected layout of %s", what,
                     q->codec.name);
        for (int64_t r = 0; r < R; r++) memcpy(sc16 + r * ngrp, pn->data + (size_t)r * pn->row_bytes, pn->row_bytes);
        if (kind == TQ_CODEC_TQ) {
            int sizes[16];
            const int nd = tq_rot_block_sizes(N, g, sizes);
            const tq_qpart* pcb = tq_qtensor_part(q, "codebook");
            const int nc = 1 << bits;
            TQ_GOTO_FAIL(!pcb || pcb->bytes != (size_t)4 * nc * nd || nd > 16 || nc > 16, TQ_ERR_ARG, out,
                         "gptq %s: unexpected codebook", what);
            for (int i = 0; i < nd; i++) {
                memcpy(P->cb[i], pcb->data + (size_t)4 * nc * i, (size_t)4 * nc);
                for (int t = 0; t + 1 < nc; t++) P->bnd[i][t] = 0.5f * (P->cb[i][t] + P->cb[i][t + 1]);
            }
            for (int64_t k = 0; k < ngrp; k++) {
                const int d = (int)(grp_start[k + 1] - grp_start[k]);
                for (int i = 0; i < nd; i++)
                    if (sizes[i] == d) cb_of[k] = i;
            }
        }
    } else if (kind == TQ_CODEC_INT8) {
        const tq_qpart* ps = tq_qtensor_part(q, "scales");
        TQ_GOTO_FAIL(!ps || ps->row_bytes != 4, TQ_ERR_ARG, out, "gptq %s: unexpected int8 layout", what);
        for (int64_t r = 0; r < R; r++) memcpy(&sc32[r], ps->data + (size_t)r * 4, 4);
    }

    /* 2-3. W and H in double (rotated), conditioned, act-order permutation: the CPU reference's own
     * preparation (kernels/gptq_internal.h), so both paths see the same H */
    if (rotated) {
        signs = (float*)malloc((size_t)N * sizeof(float));
        TQ_GOTO_FAIL(!signs, TQ_ERR_NOMEM, out, "gptq %s: out of memory", what);
        tq_rot_signs(q->seed, N, signs);
    }
    rc = tq_gptq_prepare(w, h, R, N, g, rotated ? signs : NULL, damp, o->act_order, W, Hm, perm, tmp, what);
    if (rc != TQ_OK) goto out;
    if (o->act_order) {
        /* rtn with act-order: static groups from the original weights (the codec's own params) */
        if (kind == TQ_CODEC_RTN) {
            const tq_qpart* ps = tq_qtensor_part(q, "scales");
            const tq_qpart* pm = tq_qtensor_part(q, "mins");
            TQ_GOTO_FAIL(!ps || !pm, TQ_ERR_ARG, out, "gptq %s: unexpected rtn layout", what);
            for (int64_t r = 0; r < R; r++) {
                memcpy(sc16 + r * ngrp, ps->data + (size_t)r * ps->row_bytes, ps->row_bytes);
                memcpy(mn16 + r * ngrp, pm->data + (size_t)r * pm->row_bytes, pm->row_bytes);
            }
        }
    }

    /* 4-5. on the device */
    pthread_mutex_lock(&gq_mu);
    locked = 1;
    {
        const size_t nn = (size_t)N * (size_t)N, rn = (size_t)R * (size_t)N, rb = (size_t)R * (size_t)B;
        const size_t ng = (size_t)(R * ngrp);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dH, nn * sizeof(double)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dW, rn * sizeof(double)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dW1T, rb * sizeof(double)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dE1T, rb * sizeof(double)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dperm, (size_t)N * sizeof(int64_t)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dgrp_of, (size_t)N * sizeof(int64_t)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dgrp_start, (size_t)(ngrp + 1) * sizeof(int64_t)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dcb_of, (size_t)ngrp * sizeof(int)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dsc16, ng * sizeof(uint16_t)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dmn16, ng * sizeof(uint16_t)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dsc32, (size_t)R * sizeof(float)), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&dcodesT, rn), out);
        CUDA_CHECK_GOTO(cudaMalloc((void**)&derr, sizeof(unsigned long long)), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dH, Hm, nn * sizeof(double), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dW, W, rn * sizeof(double), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dperm, perm, (size_t)N * sizeof(int64_t), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dgrp_of, grp_of, (size_t)N * sizeof(int64_t), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dgrp_start, grp_start, (size_t)(ngrp + 1) * sizeof(int64_t), cudaMemcpyHostToDevice),
                        out);
        CUDA_CHECK_GOTO(cudaMemcpy(dcb_of, cb_of, (size_t)ngrp * sizeof(int), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dsc16, sc16, ng * sizeof(uint16_t), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dmn16, mn16, ng * sizeof(uint16_t), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemcpy(dsc32, sc32, (size_t)R * sizeof(float), cudaMemcpyHostToDevice), out);
        CUDA_CHECK_GOTO(cudaMemset(dcodesT, 0, rn), out);
        CUDA_CHECK_GOTO(cudaMemcpy(derr, &herr, sizeof herr, cudaMemcpyHostToDevice), out);
        TQ_CHECK_GOTO(gq_device_run(P, B, dH, dW, dW1T, dE1T, dperm, dgrp_of, dgrp_start, dcb_of, dsc16, dmn16, dsc32,
                                    dcodesT, derr, what),
                      out);
        CUDA_CHECK_GOTO(cudaMemcpy(&herr, derr, sizeof herr, cudaMemcpyDeviceToHost), out);
        TQ_GOTO_FAIL(herr != ~0ull, TQ_ERR_NUMERIC, out,
                     "gptq %s row %lld group %lld: scale/min exceeds the fp16 range of %s", what,
                     (long long)(herr / (unsigned long long)ngrp), (long long)(herr % (unsigned long long)ngrp), "rtn");
        CUDA_CHECK_GOTO(cudaMemcpy(codesT, dcodesT, rn, cudaMemcpyDeviceToHost), out);
        CUDA_CHECK_GOTO(cudaMemcpy(sc16, dsc16, ng * sizeof(uint16_t), cudaMemcpyDeviceToHost), out);
        CUDA_CHECK_GOTO(cudaMemcpy(mn16, dmn16, ng * sizeof(uint16_t), cudaMemcpyDeviceToHost), out);
    }

    /* 6. the codes (and rtn params) into the codec's parts */
    for (int64_t r = 0; r < R; r++) {
        uint8_t* dst = pc->data + (size_t)r * pc->row_bytes;
        for (int64_t j = 0; j < N; j++) codes[j] = codesT[j * R + r];
        if (kind == TQ_CODEC_INT8) {
            memcpy(dst, codes, (size_t)N); /* int8 codes stored as bytes (two's complement) */
        } else {
            memset(dst, 0, pc->row_bytes);
            tq_pack_bits(dst, codes, N, bits);
        }
    }
    if (kind == TQ_CODEC_RTN && !o->act_order) {
        const tq_qpart* ps = tq_qtensor_part(q, "scales");
        const tq_qpart* pm = tq_qtensor_part(q, "mins");
        TQ_GOTO_FAIL(!ps || !pm, TQ_ERR_ARG, out, "gptq %s: unexpected rtn layout", what);
        for (int64_t r = 0; r < R; r++) {
            memcpy(ps->data + (size_t)r * ps->row_bytes, sc16 + r * ngrp, ps->row_bytes);
            memcpy(pm->data + (size_t)r * pm->row_bytes, mn16 + r * ngrp, pm->row_bytes);
        }
    }
out:
    if (dH) cudaFree(dH);
    if (dW) cudaFree(dW);
    if (dW1T) cudaFree(dW1T);
    if (dE1T) cudaFree(dE1T);
    if (dperm) cudaFree(dperm);
    if (dgrp_of) cudaFree(dgrp_of);
    if (dgrp_start) cudaFree(dgrp_start);
    if (dcb_of) cudaFree(dcb_of);
    if (dsc16) cudaFree(dsc16);
    if (dmn16) cudaFree(dmn16);
    if (dsc32) cudaFree(dsc32);
    if (dcodesT) cudaFree(dcodesT);
    if (derr) cudaFree(derr);
    if (locked) pthread_mutex_unlock(&gq_mu);
    free(P);
    free(grp_of);
    free(grp_start);
    free(cb_of);
    free(sc16);
    free(mn16);
    free(sc32);
    free(signs);
    free(W);
    free(Hm);
    free(tmp);
    free(codesT);
    free(codes);
    free(perm);
    return rc;
}
