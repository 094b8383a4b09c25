/* hessian.cu — H += XᵀX on the GPU (kernels/linalg_gpu.h): the accumulator's fp32 block is updated
 * with cublasSsyrk in fp32 (pedantic math, no TF32), exactly what tq_hess_add_ref does with
 * cblas_ssyrk on the CPU; flushing into the exact fixed-point sums stays on the host (hessian_ref.c),
 * so the per-sequence block boundary and the rank-count invariance are the CPU path's.
 * Also holds what both linear-algebra files share: tq_linalg_use_gpu and tq_linalg_gpu_release.
 *
 * Layout: a row-major X [n x d] (row stride ldx) is a column-major d x n matrix, so XᵀX = A·Aᵀ with
 * A = that matrix: cublasSsyrk(LOWER, N). The column-major lower triangle is the row-major upper
 * triangle the CPU block uses. Rows are uploaded in chunks of at most TQ_HESS_GPU_CHUNK bytes. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "codec.h" /* defines: tq_gpu_available */
#include "linalg_gpu.h"
#include "status.h"
}
#include "gpu_common.cuh" /* defines: CUDA_CHECK_GOTO, CUBLAS_CHECK_GOTO */

#define TQ_HESS_GPU_CHUNK ((size_t)64 << 20)

/* defined in kernels/gptq.cu */
void tq_gptq_gpu_release_state(void);

static pthread_mutex_t hess_mu = PTHREAD_MUTEX_INITIALIZER;
static cublasHandle_t hess_blas;
static int hess_blas_ok = 0;
static float* hess_dx = NULL; /* staged rows [chunk x d] */
static float* hess_dc = NULL; /* block [d x d] */
static size_t hess_cap_x = 0, hess_cap_c = 0;

extern "C" int tq_linalg_use_gpu(void)
{
    if (!tq_gpu_available()) return 0;
    const char* e = getenv("TQ_NO_GPU_LINALG");
    return !(e && *e && strcmp(e, "0") != 0);
}

static tq_status hess_reserve(float** p, size_t* cap, size_t bytes)
{
    if (bytes <= *cap) return TQ_OK;
    if (*p) cudaFree(*p);
    *p = NULL;
    *cap = 0;
    CUDA_CHECK(cudaMalloc((void**)p, bytes));
    *cap = bytes;
    return TQ_OK;
}

static void hess_release_locked(void)
{
    if (hess_dx) cudaFree(hess_dx);
    if (hess_dc) cudaFree(hess_dc);
    hess_dx = hess_dc = NULL;
    hess_cap_x = hess_cap_c = 0;
    if (hess_blas_ok) cublasDestroy(hess_blas);
    hess_blas_ok = 0;
}

extern "C" void tq_linalg_gpu_release(void)
{
    pthread_mutex_lock(&hess_mu);
    hess_release_locked();
    pthread_mutex_unlock(&hess_mu);
    tq_gptq_gpu_release_state();
}

static tq_status hess_add_locked(tq_hess* h, const float* x, int64_t n, int64_t ldx, const char* what)
{
    tq_status rc = TQ_OK;
    const int64_t d = h->d;
    const size_t cbytes = (size_t)d * (size_t)d * sizeof(float);
    int64_t chunk = (int64_t)(TQ_HESS_GPU_CHUNK / ((size_t)d * sizeof(float)));
    if (chunk < 1) chunk = 1;
    if (chunk > n) chunk = n;
    const float one = 1.0f;
    TQ_GOTO_FAIL(d > 2147483647 || chunk > 2147483647, TQ_ERR_ARG, out, "hessian %s: dimension too large for cuBLAS",
                 what);
    if (!hess_blas_ok) {
        CUBLAS_CHECK_GOTO(cublasCreate(&hess_blas), out);
        hess_blas_ok = 1;
        /* fp32 products and sums, as the CPU block: never TF32 */
        CUBLAS_CHECK_GOTO(cublasSetMathMode(hess_blas, CUBLAS_PEDANTIC_MATH), out);
    }
    TQ_CHECK_GOTO(hess_reserve(&hess_dc, &hess_cap_c, cbytes), out);
    TQ_CHECK_GOTO(hess_reserve(&hess_dx, &hess_cap_x, (size_t)chunk * (size_t)d * sizeof(float)), out);
    if (h->blk_rows > 0)
        CUDA_CHECK_GOTO(cudaMemcpy(hess_dc, h->blk, cbytes, cudaMemcpyHostToDevice), out);
    else
        CUDA_CHECK_GOTO(cudaMemset(hess_dc, 0, cbytes), out); /* the block is zero after a flush */
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
        const int64_t nr = n - r0 < chunk ? n - r0 : chunk;
        CUDA_CHECK_GOTO(cudaMemcpy2D(hess_dx, (size_t)d * sizeof(float), x + r0 * ldx, (size_t)ldx * sizeof(float),
                                     (size_t)d * sizeof(float), (size_t)nr, cudaMemcpyHostToDevice),
                        out);
        CUBLAS_CHECK_GOTO(cublasSsyrk(hess_blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)d, (int)nr, &one, hess_dx,
                                      (int)d, &one, hess_dc, (int)d),
                          out);
    }
    CUDA_CHECK_GOTO(cudaMemcpy(h->blk, hess_dc, cbytes, cudaMemcpyDeviceToHost), out);
    h->blk_rows += n;
out:
    return rc;
}

extern "C" tq_status tq_hess_add_gpu(tq_hess* h, const float* x, int64_t n, int64_t ldx, const char* what)
{
    if (!what) what = "?";
    if (!h || !h->blk || (!x && n > 0) || n < 0 || ldx < h->d)
        return tq_fail(TQ_ERR_ARG, "hessian %s: bad arguments", what);
    if (n == 0) return TQ_OK;
    if (h->diag_only || n < TQ_HESS_GPU_MIN_ROWS) return tq_hess_add_ref(h, x, n, ldx, what);
    if (!tq_gpu_available()) return tq_fail(TQ_ERR_NOGPU, "hessian %s on GPU: no CUDA device", what);
    const int64_t d = h->d;
    for (int64_t r = 0; r < n; r++) {
        const float* xr = x + r * ldx;
        for (int64_t j = 0; j < d; j++)
            if (!isfinite(xr[j]))
                return tq_fail(TQ_ERR_NUMERIC, "hessian %s: input row %lld column %lld is %g (NaN/Inf activations)",
                               what, (long long)r, (long long)j, (double)xr[j]);
    }
    pthread_mutex_lock(&hess_mu);
    tq_status rc = hess_add_locked(h, x, n, ldx, what);
    pthread_mutex_unlock(&hess_mu);
    return rc;
}
