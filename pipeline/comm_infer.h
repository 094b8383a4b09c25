/* comm_infer.h — point-to-point messages of the pipeline-parallel inference (activations passed from
 * the rank holding layers [a, b) to the rank holding [b, c)). Thin MPI wrappers so the inference code
 * needs no mpi.h (pipeline/comm* and rt.c are the only places that call MPI). */
#ifndef TQ_COMM_INFER_H
#define TQ_COMM_INFER_H

#include <stddef.h>

#include "rt.h"
#include "status.h"

/* Blocking send / receive of n floats to / from rank `peer` with `tag` (>= 0). TQ_ERR_MPI on failure;
 * a receive of a different count is TQ_ERR_MPI too. */
tq_status tq_comm_send_f32(const tq_rt* rt, int peer, int tag, const float* buf, size_t n);
tq_status tq_comm_recv_f32(const tq_rt* rt, int peer, int tag, float* buf, size_t n);

/* GPU pipeline parallel: activations between ranks' GPUs. COLLECTIVE init: NCCL (ncclSend / ncclRecv on
 * the model's stream, NCCL_NVLS_ENABLE=0) when the build has NCCL and every rank drives a different GPU
 * (PCI bus ids compared across ranks); otherwise (ranks sharing a GPU: NCCL refuses duplicate devices,
 * or no NCCL) tq_comm_gpu_nccl() is 0 and callers stage through the host with tq_comm_send_f32 /
 * tq_comm_recv_f32. `device` is this rank's CUDA device. The choice is logged on rank 0. */
typedef struct tq_comm_gpu tq_comm_gpu;
tq_status tq_comm_gpu_init(const tq_rt* rt, int device, tq_comm_gpu** out);
int tq_comm_gpu_nccl(const tq_comm_gpu* c);
/* Enqueue a send / receive of n floats of device memory on `stream` (a cudaStream_t). NCCL only. */
tq_status tq_comm_gpu_send(tq_comm_gpu* c, int peer, const float* dbuf, size_t n, void* stream);
tq_status tq_comm_gpu_recv(tq_comm_gpu* c, int peer, float* dbuf, size_t n, void* stream);
void tq_comm_gpu_free(tq_comm_gpu** pc);

#endif
