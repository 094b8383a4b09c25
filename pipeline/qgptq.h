/* qgptq.h — the quantize stage's per-tensor "quantize with GPTQ" service (issue 7): given a unit (a row
 * slice of one tensor, fp32) and its codec, quantize it with GPTQ error compensation against the H file
 * the calibrate stage wrote (pipeline/calib.h), or plainly when GPTQ does not apply.
 *
 * When GPTQ applies (tq_qgptq_applies): a 2-D tensor of a linear role (attention, MLP, experts, DeltaNet
 * projections, router, untied lm_head) whose codec GPTQ supports (kernels/gptq.h: rtn2..8, int8, tq1..4,
 * bin1). Embeddings are never compensated (the rows are looked up, not multiplied: GPTQ's objective
 * does not describe their error; a tied embedding's head H is ignored). Other codecs (tq{b}r{r}, ter, fp)
 * fall back to plain quantization with one logged note per codec.
 * H file: <hess_dir>/<input key>.hess.zst (tq_calib_input_key: k/v share q_proj's H, up shares gate's).
 * A missing file is an error naming it and what to run; a diagonal-only file (calibrate --diag, or the
 * job's expert_h: diag for MoE experts) means "no full H": the tensor is quantized plainly, with a note.
 * Rows: GPTQ treats every row independently (same U = chol(H⁻¹), per-row codec parameters), so a slice
 * quantized alone equals those rows of the whole tensor quantized at once (up to the BLAS rounding of the
 * block update); with the unit list fixed by ingest the bytes never depend on the rank count, and a rerun
 * or a resume reproduces them exactly (the computation is deterministic on the same hardware path: CPU
 * LAPACK/BLAS with a fixed thread count, or the GPU kernels).
 * Device: tq_gptq_quantize_gpu when allow_gpu and tq_linalg_use_gpu() (CUDA build, device present,
 * TQ_NO_GPU_LINALG unset), else tq_gptq_quantize_ref. Plain units use tq_quantize_gpu / tq_quantize_ref
 * by the same allow_gpu flag, as the quantize stage always did.
 * Memory: the cached H of the last input key (8·d² bytes, one per consecutive run of units sharing it)
 * plus GPTQ's working set for one unit (kernels/gptq.h: about 8·(2·d² + rows·d) bytes on the CPU). */
#ifndef TQ_QGPTQ_H
#define TQ_QGPTQ_H

#include <stdint.h>

#include "codec.h"  /* defines: tq_codec, tq_qtensor */
#include "gptq.h"   /* defines: tq_gptq_opts */
#include "status.h" /* defines: tq_status */

typedef struct tq_qgptq tq_qgptq;

typedef struct {
    int64_t gptq_units;   /* units quantized with GPTQ */
    int64_t plain_units;  /* units quantized plainly (GPTQ does not apply) */
    int64_t h_loads;      /* H files read */
    double seconds;       /* time inside GPTQ (H loads included) */
} tq_qgptq_stats;

/* Open the service over the H files in hess_dir. `fix` says what to run when files are missing (e.g.
 * "run `tqpipe stage calibrate --run RUN`"); NULL gives a generic hint. A missing directory is
 * TQ_ERR_NOTFOUND naming it. allow_gpu: the caller's device choice (0 = CPU only). Local. */
tq_status tq_qgptq_create(const char* hess_dir, const tq_gptq_opts* o, int allow_gpu, const char* fix, tq_qgptq** out);
/* Free; logs (INFO, this rank) the counts of GPTQ / plain units when any unit ran. Accepts NULL. */
void tq_qgptq_free(tq_qgptq** pg);

/* For the quantize stage: *out = NULL when job_gptq is 0, else the service over RUN/calibrate/hessian
 * with the job's options (act_order, damp; block 128), the "missing" hint naming the calibrate stage. */
tq_status tq_qgptq_for_run(const char* run_dir, int job_gptq, int act_order, double damp, int allow_gpu,
                           tq_qgptq** out);

/* 1 when GPTQ applies to `tensor` of role `role_name` (arch.h role names), ndim dimensions, codec c;
 * 0 otherwise, with *why (may be NULL) a static reason. */
int tq_qgptq_applies(const char* tensor, const char* role_name, int ndim, const tq_codec* c, const char** why);

/* Quantize w [q->rows x q->cols] (rows of `tensor`, ndim its dimensions) into q (allocated with the codec, shape and seed):
 * with GPTQ when g != NULL and tq_qgptq_applies, else plainly (GPU when allow_gpu and one is present).
 * g NULL: always plain, with allow_gpu choosing the device. `what` names the unit in errors.
 * *applied (may be NULL) gets 1 when GPTQ ran. */
tq_status tq_qgptq_quantize(tq_qgptq* g, const char* tensor, const char* role_name, int ndim, int allow_gpu,
                            const float* w, tq_qtensor* q, const char* what, int* applied);

/* Counters so far. */
void tq_qgptq_get_stats(const tq_qgptq* g, tq_qgptq_stats* st);

#endif
