/* safetensors.h — in-memory entry points of the safetensors / index parsers behind ckpt.h, for the fuzz
 * targets and unit tests. They run exactly the validation tq_ckpt_open runs on files, on a buffer.
 *
 * safetensors file layout (what the parser accepts):
 *   offset 0      u64 little endian N   (1 <= N <= TQ_ST_MAX_HEADER, 8 + N <= file size)
 *   offset 8      N bytes: UTF-8 JSON object (trailing spaces allowed)
 *                   "__metadata__": object (optional, string values)
 *                   "<tensor>": {"dtype": "F32"|"F16"|"BF16", "shape": [d0, ...] (0..8 dims, >= 0),
 *                                "data_offsets": [begin, end]}   relative to offset 8 + N
 *   offset 8 + N  tensor data; every [begin, end) lies inside the file, end - begin = prod(shape) * size,
 *                 no two spans overlap.
 * model.safetensors.index.json: {"metadata": {...} (optional), "weight_map": {"<tensor>": "<file name>"}}
 *   file names are plain names in the same directory (no '/', not "." or ".."). */
#ifndef TQ_SAFETENSORS_H
#define TQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "status.h"

#define TQ_ST_MAX_HEADER ((uint64_t)100 << 20) /* 100 MB: far above the largest real header (~5 MB) */

/* Validate a whole safetensors file held in memory (label names it in errors).
 * @return TQ_OK and the tensor count in *n_tensors, or TQ_ERR_FORMAT / TQ_ERR_CORRUPT /
 * TQ_ERR_UNSUPPORTED with tq_last_error() set. Never crashes on any input. Local. */
tq_status tq_st_validate_buffer(const void* data, size_t len, const char* label, int64_t* n_tensors);

/* Validate the text of a model.safetensors.index.json (not the files it names).
 * @return TQ_OK and the number of weight_map entries / distinct files, or TQ_ERR_FORMAT. Local. */
tq_status tq_st_validate_index_text(const char* text, size_t len, const char* label, int64_t* n_entries,
                                    int* n_files);

/* ---- batched reads (for loops over many small tensors, e.g. inspect --verify on MoE checkpoints with
 * tens of thousands of KB-sized tensors, where one pread per tensor is syscall-bound) ---------------- */

/* Fill idx[0..n) (n = tq_ckpt_count) with tensor indices ordered by (file, offset): reading tensors in
 * this order walks every file front to back. @return TQ_OK, TQ_ERR_ARG (n too small), TQ_ERR_NOMEM. */
tq_status tq_ckpt_file_order(const tq_ckpt* c, int64_t* idx, int64_t n);

/* Read whole tensors idx[0..n) (indices as in tq_ckpt_tensor) back to back into dst, in the given order;
 * runs of tensors that are adjacent in the same file are read with one pread each.
 * dst_cap must hold the sum of their nbytes. Local; safe to call from several threads. */
tq_status tq_ckpt_read_batch(const tq_ckpt* c, const int64_t* idx, int64_t n, void* dst, size_t dst_cap);

#endif
