/* qbatch_gpu.h — the device side of the batched quantize engine (pipeline/qbatch.c): one stream, a
 * device input buffer and a device output arena that live for the whole stage (grown, never freed
 * between batches), pinned host buffers, and the few async copies a batch needs:
 *     H2D(raw batch) -> per-unit tq_quantize_gpu_dev(check = 0) launches -> D2H(output arena) -> sync
 * i.e. one round trip per batch instead of an allocation, copies and a synchronisation per unit.
 * Ranks of a node share its GPUs: rank r uses device (local rank % device count); several ranks on one
 * GPU each get their own context and buffers (memory per rank: the two buffers below).
 * Builds without CUDA: tq_qgpu_create answers TQ_ERR_NOGPU, the host allocators fall back to malloc. */
#ifndef TQ_QBATCH_GPU_H
#define TQ_QBATCH_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct tq_qgpu tq_qgpu;

/* Number of CUDA devices this process sees (0 without CUDA or a device). LOCAL. */
int tq_qgpu_count(void);
/* Select the device for this rank (local_rank % count) and create a stream. LOCAL. */
tq_status tq_qgpu_create(int local_rank, tq_qgpu** out);
void tq_qgpu_free(tq_qgpu** pg);
/* Grow the device input buffer / output arena to at least these sizes. */
tq_status tq_qgpu_reserve(tq_qgpu* g, size_t in_bytes, size_t out_bytes);
uint8_t* tq_qgpu_din(const tq_qgpu* g);
uint8_t* tq_qgpu_dout(const tq_qgpu* g);
void* tq_qgpu_stream(const tq_qgpu* g); /* a cudaStream_t */
/* Async on the stream: host src -> device input [0, n); zero device output [0, n); device output
 * [0, n) -> host dst. tq_qgpu_sync waits for all of them and reports a kernel error. */
tq_status tq_qgpu_h2d(tq_qgpu* g, const void* src, size_t n);
tq_status tq_qgpu_zero_out(tq_qgpu* g, size_t n);
tq_status tq_qgpu_d2h(tq_qgpu* g, void* dst, size_t n);
tq_status tq_qgpu_sync(tq_qgpu* g);

/* Host buffers: pinned (page-locked, portable) when pinned = 1 and CUDA is there, else malloc. */
tq_status tq_qgpu_host_alloc(size_t n, int pinned, void** p);
void tq_qgpu_host_free(void* p, int pinned);

#endif
