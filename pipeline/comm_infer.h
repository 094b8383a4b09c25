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

#endif
