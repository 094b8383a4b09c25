/* sensitivity.h — the sensitivity table: for every tensor of a model and every candidate codec, the
 * exact bytes that codec stores for it and the predicted damage Ω = tr(ΔW·H·ΔWᵀ), where ΔW is the
 * codec's actual quantization error (plain, or after GPTQ compensation) and H = XᵀX/n is the Hessian
 * proxy of the layer's inputs (full, or only its diagonal). allocate (pipeline/allocate.h) reads it.
 *
 * File format (TSV, UTF-8, one header line, '#' comment lines allowed anywhere):
 *
 *   # tqpipe sensitivity table v1
 *   tensor<TAB>role<TAB>rows<TAB>cols<TAB>codec<TAB>bytes<TAB>omega
 *   model.layers.0.mlp.down_proj.weight<TAB>mlp_down<TAB>64<TAB>172<TAB>rtn4<TAB>6016<TAB>1.234567e-03
 *
 *   tensor  full tensor name as in the checkpoint
 *   role    pipeline/arch.h role name ("mlp_down", "norm", "embed", ...; "other" when unknown)
 *   rows, cols   shape as a matrix (rows = product of all dims but the last)
 *   codec   codec label: the codec name, with ":g<G>" appended when its group is not 128 ("rtn4:g64")
 *   bytes   tq_codec_bytes(codec, rows, cols): every byte stored (codes, scales, norms, codebook)
 *   omega   Ω (%.9e); 0 for lossless codecs (f32 for fp32 inputs) and for tensors without an H
 *           (measured Ω is never negative; "nan" is rejected)
 * A tensor appears once per codec; every tensor of the model must be listed (non-quantized tensors
 * with at least one codec, e.g. f32) so a budget over the whole model counts every byte. */
#ifndef TQ_SENSITIVITY_H
#define TQ_SENSITIVITY_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"   /* defines: TQ_MAX_NAME */
#include "codec.h"  /* defines: tq_codec */
#include "gptq.h"   /* defines: tq_gptq_opts */
#include "status.h" /* defines: tq_status */

#define TQ_CODEC_LABEL 24

typedef struct {
    char tensor[TQ_MAX_NAME];
    char role[32];
    int64_t rows, cols;
    char codec[TQ_CODEC_LABEL];
    uint64_t bytes;
    double omega;
} tq_sens_row;

typedef struct {
    int64_t n, cap;
    tq_sens_row* rows;
} tq_sens_table;

/* Codec label <-> codec: "rtn4" (group 128), "rtn4:g64". */
tq_status tq_codec_label_parse(const char* label, tq_codec* out);
void tq_codec_label(const tq_codec* c, char out[TQ_CODEC_LABEL]);

tq_status tq_sens_table_create(tq_sens_table** out);
void tq_sens_table_free(tq_sens_table** pt);
tq_status tq_sens_table_add(tq_sens_table* t, const tq_sens_row* r);
/* Σ rows·cols over the distinct tensors of the table (each tensor once). */
int64_t tq_sens_table_weights(const tq_sens_table* t);
/* Parse TSV text (format above). Errors: TQ_ERR_FORMAT naming `what` and the line. */
tq_status tq_sens_table_parse(const char* text, size_t len, const char* what, tq_sens_table** out);
tq_status tq_sens_table_load(const char* path, tq_sens_table** out);
/* Text of the table (malloc'd, NUL-terminated). */
tq_status tq_sens_table_format(const tq_sens_table* t, char** out, size_t* len);
/* Atomic write (temp + fsync + rename). */
tq_status tq_sens_table_save(const tq_sens_table* t, const char* path);

/* Ω = tr(ΔW·H·ΔWᵀ) for ΔW [rows x cols] and H [cols x cols] (h_diag_only: h holds the diagonal [cols]).
 * Double accumulation. */
double tq_omega(const float* dw, int64_t rows, int64_t cols, const double* h, int h_diag_only);

/* Quantize w [rows x cols] with codec c (plain tq_quantize_ref, or GPTQ when gptq != NULL, which needs a
 * full H), dequantize, and return Ω and the exact bytes. seed: tq_tensor_seed(job seed, name).
 * h == NULL: Ω = 0 (no calibration for this tensor). `what` names the tensor in errors. Local. */
tq_status tq_sens_measure(const float* w, int64_t rows, int64_t cols, const double* h, int h_diag_only,
                          const tq_codec* c, uint64_t seed, const tq_gptq_opts* gptq, const char* what,
                          double* omega, uint64_t* bytes);

#endif
