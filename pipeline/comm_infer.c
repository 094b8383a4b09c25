/* comm_infer.c — MPI send/receive of activation blocks for pipeline-parallel inference (comm_infer.h),
 * and the NCCL channel between the ranks' GPUs for the GPU forward pass. Messages larger than INT_MAX
 * floats are sent in pieces. */
#include "comm_infer.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#if defined(TQ_HAVE_NCCL) && defined(__has_include)
#if __has_include(<nccl.h>)
#define TQ_USE_NCCL 1
#include <cuda_runtime.h>
#include <nccl.h>
#endif
#endif

#define CHUNK ((size_t)1 << 28)

tq_status tq_comm_send_f32(const tq_rt* rt, int peer, int tag, const float* buf, size_t n)
{
    (void)rt;
    for (size_t off = 0; off < n || (n == 0 && off == 0); off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        int rc = MPI_Send(buf + off, cnt, MPI_FLOAT, peer, tag, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return tq_fail(TQ_ERR_MPI, "MPI_Send of %zu floats to rank %d failed (%d)", n, peer, rc);
        if (n == 0) break;
    }
    return TQ_OK;
}

tq_status tq_comm_recv_f32(const tq_rt* rt, int peer, int tag, float* buf, size_t n)
{
    (void)rt;
    for (size_t off = 0; off < n || (n == 0 && off == 0); off += CHUNK) {
        int cnt = (int)(n - off < CHUNK ? n - off : CHUNK);
        MPI_Status st;
        int rc = MPI_Recv(buf + off, cnt, MPI_FLOAT, peer, tag, MPI_COMM_WORLD, &st);
        if (rc != MPI_SUCCESS) return tq_fail(TQ_ERR_MPI, "MPI_Recv of %zu floats from rank %d failed (%d)", n, peer, rc);
        int got = 0;
        MPI_Get_count(&st, MPI_FLOAT, &got);
        if (got != cnt)
            return tq_fail(TQ_ERR_MPI, "rank %d sent %d floats, expected %d (ranks disagree on the batch)", peer, got, cnt);
        if (n == 0) break;
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// GPU to GPU

struct tq_comm_gpu {
    int nccl;
#ifdef TQ_USE_NCCL
    ncclComm_t comm;
#endif
};

int tq_comm_gpu_nccl(const tq_comm_gpu* c)
{
    return c && c->nccl;
}

tq_status tq_comm_gpu_init(const tq_rt* rt, int device, tq_comm_gpu** out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return tq_fail(TQ_ERR_NOMEM, "out of memory");
    if (rt->size < 2) return TQ_OK;
#ifdef TQ_USE_NCCL
    char bus[64];
    memset(bus, 0, sizeof bus);
    if (device < 0 || cudaDeviceGetPCIBusId(bus, (int)sizeof bus, device) != cudaSuccess) snprintf(bus, sizeof bus, "?%d", rt->rank);
    char host[MPI_MAX_PROCESSOR_NAME];
    int hl = 0;
    MPI_Get_processor_name(host, &hl);
    char key[64 + MPI_MAX_PROCESSOR_NAME + 2];
    memset(key, 0, sizeof key);
    snprintf(key, sizeof key, "%s/%s", host, bus);
    char* all = malloc((size_t)rt->size * sizeof key);
    if (!all) return tq_fail(TQ_ERR_NOMEM, "out of memory");
    int rc = MPI_Allgather(key, (int)sizeof key, MPI_CHAR, all, (int)sizeof key, MPI_CHAR, MPI_COMM_WORLD);
    int dup = rc != MPI_SUCCESS;
    for (int i = 0; i < rt->size && !dup; i++)
        for (int j = i + 1; j < rt->size && !dup; j++) dup = !strncmp(all + (size_t)i * sizeof key, all + (size_t)j * sizeof key, sizeof key);
    free(all);
    if (dup) {
        if (rt->rank == 0)
            TQ_LOG(TQ_LOG_INFO, "GPU pipeline: ranks share a GPU (NCCL refuses duplicate devices): activations go through "
                                "the host over MPI");
        return TQ_OK;
    }
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t nr = ncclSuccess;
    if (rt->rank == 0) nr = ncclGetUniqueId(&id);
    int ok = nr == ncclSuccess, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_ok) return tq_fail(TQ_ERR_MPI, "ncclGetUniqueId failed: %s", ncclGetErrorString(nr));
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    nr = ncclCommInitRank(&(*out)->comm, rt->size, id, rt->rank);
    ok = nr == ncclSuccess;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all_ok) {
        if (ok) ncclCommDestroy((*out)->comm);
        return tq_fail(TQ_ERR_MPI, "ncclCommInitRank failed on some rank (%s here)", ncclGetErrorString(nr));
    }
    (*out)->nccl = 1;
    if (rt->rank == 0) TQ_LOG(TQ_LOG_INFO, "GPU pipeline: activations GPU to GPU over NCCL (%d ranks)", rt->size);
#else
    (void)device;
    if (rt->rank == 0)
        TQ_LOG(TQ_LOG_INFO, "GPU pipeline: this build has no NCCL: activations go through the host over MPI");
#endif
    return TQ_OK;
}

/* One NCCL point-to-point transfer of n floats with peer (send or receive), on the caller's stream. */
static tq_status tq_comm_gpu_p2p(tq_comm_gpu* c, int send, int peer, float* dbuf, size_t n, void* stream)
{
#ifdef TQ_USE_NCCL
    if (c && c->nccl) {
        ncclResult_t r = send ? ncclSend(dbuf, n, ncclFloat, peer, c->comm, (cudaStream_t)stream)
                              : ncclRecv(dbuf, n, ncclFloat, peer, c->comm, (cudaStream_t)stream);
        if (r != ncclSuccess)
            return tq_fail(TQ_ERR_MPI, "%s of %zu floats %s rank %d: %s", send ? "ncclSend" : "ncclRecv", n,
                           send ? "to" : "from", peer, ncclGetErrorString(r));
        return TQ_OK;
    }
#endif
    (void)c;
    (void)peer;
    (void)dbuf;
    (void)n;
    (void)stream;
    return tq_fail(TQ_ERR_ARG, "internal: GPU %s without NCCL (stage through the host)", send ? "send" : "receive");
}

tq_status tq_comm_gpu_send(tq_comm_gpu* c, int peer, const float* dbuf, size_t n, void* stream)
{
    return tq_comm_gpu_p2p(c, 1, peer, (float*)dbuf, n, stream); /* ncclSend only reads dbuf */
}

tq_status tq_comm_gpu_recv(tq_comm_gpu* c, int peer, float* dbuf, size_t n, void* stream)
{
    return tq_comm_gpu_p2p(c, 0, peer, dbuf, n, stream);
}

void tq_comm_gpu_free(tq_comm_gpu** pc)
{
    if (!pc || !*pc) return;
#ifdef TQ_USE_NCCL
    if ((*pc)->nccl) ncclCommDestroy((*pc)->comm);
#endif
    free(*pc);
    *pc = NULL;
}
