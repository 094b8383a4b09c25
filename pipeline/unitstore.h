/* unitstore.h — the bytes a quantize work unit stores: the packed parts of rows [row0, row0+nrows)
 * of one tensor, self-describing so that pack can check them against the tensor's layout before
 * assembling the whole tensor (kernels/codec.h: row parts of slices concatenate to the tensor's parts;
 * per-tensor parts such as a codebook are identical in every slice).
 *
 *   offset 0   "TQU1"                      magic
 *          4   u32 LE  H                   header length
 *          8   H bytes of text:            codec <name> <group>\n
 *                                          rows <row0> <nrows> <tensor_rows> <cols>\n
 *                                          seed <16 hex>\n
 *                                          parts <n>\n
 *                                          <name> <elem_size> <row_bytes> <bytes>\n   x n
 *          8+H the parts' bytes, in part order
 * The journal records the XXH3-64 of the whole record (manifest.h). */
#ifndef TQ_UNITSTORE_H
#define TQ_UNITSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"  /* defines: tq_qtensor */
#include "status.h"

/* Serialize slice q (q->rows = nrows) of a tensor with tensor_rows rows starting at row0.
 * *out is malloc'd. LOCAL. */
tq_status tq_unitrec_encode(const tq_qtensor* q, int64_t row0, int64_t tensor_rows, uint8_t** out, size_t* len);

/* The record's first 8 + H bytes (magic, header length, header text) for q's layout (q->part[].data is
 * not read), written to dst when dst is not NULL (cap bytes). *hdr_len = 8 + H; the whole record is
 * 8 + H + the sum of q's part bytes, the parts following in part order. Lets a caller quantize straight
 * into the record's memory (pipeline/qbatch.c). TQ_ERR_ARG when the header does not fit. LOCAL. */
tq_status tq_unitrec_header(const tq_qtensor* q, int64_t row0, int64_t tensor_rows, uint8_t* dst, size_t cap,
                            size_t* hdr_len);

/* Check a record against `full` (allocated by tq_qtensor_alloc for the whole tensor: same codec, group,
 * cols, seed, part layout) and copy its bytes into place. `what` names the unit in errors.
 * *row0 / *nrows receive the slice. TQ_ERR_CORRUPT for any mismatch or truncation. LOCAL. */
tq_status tq_unitrec_decode_into(const uint8_t* rec, size_t len, tq_qtensor* full, int64_t* row0, int64_t* nrows,
                                 const char* what);

#endif
