/* qbatch_gpu.c — stream, device buffers and pinned host memory for the batched quantize engine
 * (see qbatch_gpu.h). Plain C over the CUDA runtime API; without TQ_HAVE_CUDA every device call
 * answers TQ_ERR_NOGPU and host buffers are ordinary malloc. */
#include "qbatch_gpu.h"

#include <stdlib.h>

#ifdef TQ_HAVE_CUDA
#include <cuda_runtime_api.h> /* defines: cudaMalloc, cudaMemcpyAsync, cudaStreamCreate, ... */
#endif

#ifdef TQ_HAVE_CUDA

struct tq_qgpu {
    int device;
    cudaStream_t stream;
    uint8_t* din;
    uint8_t* dout;
    size_t in_cap, out_cap;
};

#define TQ_QGPU_CHECK(expr)                                                                              \
    do {                                                                                                 \
        cudaError_t e_ = (expr);                                                                         \
        if (e_ != cudaSuccess)                                                                           \
            return tq_fail(TQ_ERR_CUDA, "%s failed: %s (quantize batch on GPU)", #expr, cudaGetErrorString(e_)); \
    } while (0)

int tq_qgpu_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

tq_status tq_qgpu_create(int local_rank, tq_qgpu** out)
{
    *out = NULL;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        cudaGetLastError();
        return tq_fail(TQ_ERR_NOGPU, "no CUDA device for the batched quantizer");
    }
    tq_qgpu* g = calloc(1, sizeof *g);
    if (!g) return tq_fail(TQ_ERR_NOMEM, "out of memory");
    g->device = local_rank >= 0 ? local_rank % n : 0;
    cudaError_t e = cudaSetDevice(g->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        free(g);
        return tq_fail(TQ_ERR_CUDA, "GPU %d: %s (quantize batch on GPU)", local_rank >= 0 ? local_rank % n : 0,
                       cudaGetErrorString(e));
    }
    *out = g;
    return TQ_OK;
}

void tq_qgpu_free(tq_qgpu** pg)
{
    if (!pg || !*pg) return;
    tq_qgpu* g = *pg;
    cudaStreamSynchronize(g->stream);
    if (g->din) cudaFree(g->din);
    if (g->dout) cudaFree(g->dout);
    cudaStreamDestroy(g->stream);
    free(g);
    *pg = NULL;
}

tq_status tq_qgpu_reserve(tq_qgpu* g, size_t in_bytes, size_t out_bytes)
{
    if (in_bytes > g->in_cap) {
        if (g->din) cudaFree(g->din);
        g->din = NULL;
        g->in_cap = 0;
        TQ_QGPU_CHECK(cudaMalloc((void**)&g->din, in_bytes));
        g->in_cap = in_bytes;
    }
    if (out_bytes > g->out_cap) {
        if (g->dout) cudaFree(g->dout);
        g->dout = NULL;
        g->out_cap = 0;
        TQ_QGPU_CHECK(cudaMalloc((void**)&g->dout, out_bytes));
        g->out_cap = out_bytes;
    }
    return TQ_OK;
}

uint8_t* tq_qgpu_din(const tq_qgpu* g) { return g->din; }
uint8_t* tq_qgpu_dout(const tq_qgpu* g) { return g->dout; }
void* tq_qgpu_stream(const tq_qgpu* g) { return (void*)g->stream; }

tq_status tq_qgpu_h2d(tq_qgpu* g, const void* src, size_t n)
{
    if (n > g->in_cap) return tq_fail(TQ_ERR_ARG, "GPU input buffer too small (%zu > %zu)", n, g->in_cap);
    if (n) TQ_QGPU_CHECK(cudaMemcpyAsync(g->din, src, n, cudaMemcpyHostToDevice, g->stream));
    return TQ_OK;
}

tq_status tq_qgpu_zero_out(tq_qgpu* g, size_t n)
{
    if (n > g->out_cap) return tq_fail(TQ_ERR_ARG, "GPU output arena too small (%zu > %zu)", n, g->out_cap);
    if (n) TQ_QGPU_CHECK(cudaMemsetAsync(g->dout, 0, n, g->stream));
    return TQ_OK;
}

tq_status tq_qgpu_d2h(tq_qgpu* g, void* dst, size_t n)
{
    if (n > g->out_cap) return tq_fail(TQ_ERR_ARG, "GPU output arena too small (%zu > %zu)", n, g->out_cap);
    if (n) TQ_QGPU_CHECK(cudaMemcpyAsync(dst, g->dout, n, cudaMemcpyDeviceToHost, g->stream));
    return TQ_OK;
}

tq_status tq_qgpu_sync(tq_qgpu* g)
{
    TQ_QGPU_CHECK(cudaStreamSynchronize(g->stream));
    TQ_QGPU_CHECK(cudaGetLastError());
    return TQ_OK;
}

tq_status tq_qgpu_host_alloc(size_t n, int pinned, void** p)
{
    *p = NULL;
    if (pinned) {
        cudaError_t e = cudaHostAlloc(p, n ? n : 16, cudaHostAllocPortable);
        if (e == cudaSuccess) return TQ_OK;
        cudaGetLastError();
        *p = NULL;
        return tq_fail(TQ_ERR_NOMEM, "cannot pin %zu bytes of host memory: %s", n, cudaGetErrorString(e));
    }
    *p = malloc(n ? n : 16);
    return *p ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "out of memory (%zu bytes) for a quantize batch", n);
}

void tq_qgpu_host_free(void* p, int pinned)
{
    if (!p) return;
    if (pinned) cudaFreeHost(p);
    else free(p);
}

#else /* no CUDA */

struct tq_qgpu {
    int unused;
};

int tq_qgpu_count(void) { return 0; }

tq_status tq_qgpu_create(int local_rank, tq_qgpu** out)
{
    (void)local_rank;
    *out = NULL;
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA (rebuild with TQ_CUDA=ON on a GPU node)");
}
void tq_qgpu_free(tq_qgpu** pg)
{
    if (pg) *pg = NULL;
}
tq_status tq_qgpu_reserve(tq_qgpu* g, size_t in_bytes, size_t out_bytes)
{
    (void)g;
    (void)in_bytes;
    (void)out_bytes;
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA");
}
uint8_t* tq_qgpu_din(const tq_qgpu* g)
{
    (void)g;
    return NULL;
}
uint8_t* tq_qgpu_dout(const tq_qgpu* g)
{
    (void)g;
    return NULL;
}
void* tq_qgpu_stream(const tq_qgpu* g)
{
    (void)g;
    return NULL;
}
tq_status tq_qgpu_h2d(tq_qgpu* g, const void* src, size_t n)
{
    (void)g;
    (void)src;
    (void)n;
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA");
}
tq_status tq_qgpu_zero_out(tq_qgpu* g, size_t n)
{
    (void)g;
    (void)n;
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA");
}
tq_status tq_qgpu_d2h(tq_qgpu* g, void* dst, size_t n)
{
    (void)g;
    (void)dst;
    (void)n;
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA");
}
tq_status tq_qgpu_sync(tq_qgpu* g)
{
    (void)g;
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA");
}
tq_status tq_qgpu_host_alloc(size_t n, int pinned, void** p)
{
    (void)pinned;
    *p = malloc(n ? n : 16);
    return *p ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "out of memory (%zu bytes) for a quantize batch", n);
}
void tq_qgpu_host_free(void* p, int pinned)
{
    (void)pinned;
    free(p);
}

#endif
