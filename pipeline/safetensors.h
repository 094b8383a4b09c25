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

#endif
