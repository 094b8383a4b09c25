/* comm_infer.c — MPI send/receive of activation blocks for pipeline-parallel inference (comm_infer.h).
 * Messages larger than INT_MAX floats are sent in pieces. */
#include "comm_infer.h"

#include <limits.h>
#include <mpi.h>

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
