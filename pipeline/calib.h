/* calib.h — calibration statistics: one H = XᵀX/n accumulator (kernels/hessian.h) per linear layer
 * input (per expert for MoE), fed with the activations the forward pass sees, reduced across ranks,
 * finalized and stored zstd-compressed in the run directory for GPTQ and the sensitivity table.
 * (The driver tq_calibrate below can also split the layers over the ranks instead: see there.)
 *
 * Protocol for a calibration run (sequences split across ranks; every rank holds the same layers):
 *   tq_calib_create; tq_calib_add per tensor (full H where GPTQ will use it, diagonal elsewhere);
 *   for each of this rank's sequences: tq_calib_observe(idx, rows of the layer input) for every layer
 *     the sequence reaches (MoE experts: only the rows routed to the expert), then tq_calib_end_sequence
 *     (flush: the fp32 block boundary is the sequence, so results never depend on the rank count);
 *   tq_calib_reduce (COLLECTIVE: exact integer SUM of every accumulator and token count);
 *   rank 0: tq_calib_save(dir).
 * Because the cross-rank sum is exact (128-bit fixed point, see hessian.h), the saved bytes are
 * identical for any number of ranks and any assignment of sequences to ranks.
 * The intended forward-pass hook (pipeline/model.h does not expose one yet): a callback
 *   void (*on_linear_input)(void* ctx, const char* weight_name, const float* x, int rows, int ld)
 * called before each linear layer (and per expert with the routed rows) -> tq_calib_observe.
 *
 * Experts that see few tokens: tq_calib_pool blends an expert's H with the pooled H of its layer
 * (all experts' inputs of the same projection) as if n_min − n_e pseudo-tokens came from the pool:
 *   H_e' = (n_e·H_e + (n_min − n_e)·H_pool) / n_min   when n_e < n_min (n_e = 0: H_e' = H_pool)
 * with n_min = the input dimension d by default (below d tokens H_e is singular). GPTQ's dampening is
 * applied on top.
 *
 * File <dir>/<tensor name>.hess.zst (little-endian):
 *   offset 0   8 bytes  magic "TQHESS1\0"
 *          8   u32      version (1)
 *         12   u32      flags: bit 0 = diagonal only
 *         16   i64      d
 *         24   u64      rows (tokens that reached this input, summed over ranks)
 *         32   u64      payload bytes before compression
 *         40   u64      XXH3-64 (seed 0) of the uncompressed payload
 *         48   ...      one zstd frame: the payload = H/n in float64, the upper triangle row by row
 *                       (i <= j, d(d+1)/2 values) or the diagonal (d values)
 * Memory per rank: full mode 4·d² + 16·d(d+1)/2 bytes per accumulator (fp32 block + exact sums),
 * plus 8·d² at save/load. */
#ifndef TQ_CALIB_H
#define TQ_CALIB_H

#include <stdint.h>

#include "ckpt.h"    /* defines: TQ_MAX_NAME */
#include "hessian.h" /* defines: tq_hess */
#include "rt.h"      /* defines: tq_rt */
#include "status.h"  /* defines: tq_status */

typedef struct {
    char name[TQ_MAX_NAME]; /* the weight tensor whose input this is */
    tq_hess h;
} tq_calib_entry;

typedef struct {
    int64_t n, cap;
    tq_calib_entry* e;
} tq_calib;

tq_status tq_calib_create(tq_calib** out);
void tq_calib_free(tq_calib** pc);
/* Add an accumulator for tensor `name` with input dimension d; *idx gets its index. Local. */
tq_status tq_calib_add(tq_calib* c, const char* name, int64_t d, int diag_only, int64_t* idx);
/* Index of `name` or -1. */
int64_t tq_calib_find(const tq_calib* c, const char* name);
/* Rows x [n x d] (row stride ldx) reach entry idx. Local. */
tq_status tq_calib_observe(tq_calib* c, int64_t idx, const float* x, int64_t n, int64_t ldx);
/* End of one calibration sequence: flush every accumulator's fp32 block. Local. */
tq_status tq_calib_end_sequence(tq_calib* c);
/* COLLECTIVE: sum every accumulator and token count over the ranks (exact). Every rank must have added
 * the same entries in the same order. Afterwards every rank holds the global sums. */
tq_status tq_calib_reduce(tq_calib* c, const tq_rt* rt);
/* Finalized H/n of entry idx into out ([d x d] symmetric, or [d]); *rows gets n. */
tq_status tq_calib_finalize(const tq_calib* c, int64_t idx, double* out, uint64_t* rows);
/* Write every entry to <dir>/<name>.hess.zst (atomic, zstd level 3). Local: call on one rank. */
tq_status tq_calib_save(const tq_calib* c, const char* dir);

/* Read one H file. *h is malloc'd: [d x d] full symmetric (both triangles) or [d]. */
tq_status tq_hess_file_load(const char* path, double** h, int64_t* d, int* diag_only, uint64_t* rows);
/* Write one H (full symmetric [d x d] or diagonal [d]) as a file in the format above. */
tq_status tq_hess_file_save(const char* path, const double* h, int64_t d, int diag_only, uint64_t rows);

/* Few-token pooling (formula above). n_min 0 -> d. h_e and h_pool are [d x d] or [d]. */
void tq_calib_pool(double* h_e, uint64_t n_e, const double* h_pool, int64_t d, int diag_only, uint64_t n_min);

/* Input key of a weight: the name its H is stored under (weights sharing one input share one H):
 * k_proj/v_proj -> q_proj, up_proj -> gate_proj (dense and experts); hybrid: in_proj_z/b/a -> in_proj_qkv,
 * in_proj_ba -> in_proj_qkvz, mlp.shared_expert_gate -> mlp.shared_expert.gate_proj; others unchanged. */
void tq_calib_input_key(const char* weight, char out[TQ_MAX_NAME]);

// ---- the calibration driver (pipeline/calibrate.c) -------------------------------------------------

typedef struct {
    const char* model;     /* Hugging Face checkpoint directory */
    const char* data;      /* token file (.tok) or text (llama2.c tokenizer), see pipeline/validate.h */
    const char* tokenizer; /* NULL: <model>/tokenizer.bin */
    int n_seqs;            /* calibration sequences (consecutive windows of the token stream); 0 = 128 */
    int seq_len;           /* tokens per sequence; 0 = min(2048, max_position) */
    int diag_only;         /* 1: only diag(H) for every layer (enough for the sensitivity table without GPTQ) */
    const char* out_dir;   /* where the .hess.zst files go */
    uint64_t min_expert_tokens; /* pooling threshold for MoE experts (0 = input dimension) */
    int threads;           /* BLAS threads per rank (0 = 1) */
    int quiet;
    int parallel;          /* TQ_CALIB_PAR_AUTO (0), _SEQ or _LAYERS, see tq_calibrate */
    double mem_per_rank;   /* auto mode: bytes a rank may hold (fp32 weights + accumulators); 0 = 16 GiB */
    int diag_experts;      /* 1: only diag(H) for routed experts (20 bytes per column instead of ~12·d²; GPTQ
                            * then quantizes experts plainly), full H for every other input */
} tq_calib_opts;

#define TQ_CALIB_PAR_AUTO 0   /* layers when the sequence-split per-rank bytes exceed mem_per_rank (and ranks > 1) */
#define TQ_CALIB_PAR_SEQ 1    /* every rank holds the whole model; sequences dealt round-robin */
#define TQ_CALIB_PAR_LAYERS 2 /* pipeline parallel: rank r holds layers [r·L/P, (r+1)·L/P) */

typedef struct {
    int n_seqs, seq_len, ranks;
    int64_t tokens;        /* tokens run through the model, all ranks */
    int64_t n_inputs;      /* H files written */
    int64_t pooled;        /* experts that were pooled */
    double seconds, tokens_per_s;
    uint64_t bytes_per_rank; /* accumulator memory per rank (the largest rank's) */
    char parallel[8];        /* "seq" or "layers" */
    uint64_t weight_bytes_per_rank; /* fp32 weights held (the largest rank's) */
    uint64_t seq_bytes_per_rank;    /* what sequence split would hold per rank: fp32 model + every accumulator */
} tq_calib_stats;

/* COLLECTIVE: run the calibration sequences through the model, accumulate H for every linear input and
 * write the files. Two ways to use P ranks, with byte-identical files:
 *   seq:    every rank holds the whole model (fp32) and every accumulator; sequences dealt round-robin;
 *           exact SUM-reduce; rank 0 pools and writes. Per rank: 4·params + Σ accumulators.
 *   layers: rank r holds layers [r·L/P', (r+1)·L/P') (P' = min(P, L); the first also the embedding, the
 *           last the final norm and head) and only those layers' accumulators; every sequence flows
 *           rank 0 -> 1 -> ... (activations [len x hidden] fp32 over MPI, as validate's pipeline mode);
 *           each rank pools and writes its own layers' files, no reduction (one owner per H). Per rank:
 *           4·(its layers' params + embedding/head) + its accumulators + len·hidden·4 activations
 *           + its KV cache.
 *   Same sequences, same per-sequence fp32 blocks, exact integer folds: the H files are identical.
 * auto picks layers when P > 1 and the seq figure exceeds mem_per_rank. Errors agree across ranks. */
tq_status tq_calibrate(const tq_rt* rt, const tq_calib_opts* o, tq_calib_stats* st);

/* Per-rank memory of both layouts for `ranks` ranks, from the descriptor alone (no weights read): what
 * `tqpipe calibrate --estimate` prints for sizing a cluster job. Weights fp32; accumulators as above;
 * buffers = activations 4·len·hidden + fp16 KV of the rank's full-attention layers + the head's logits
 * chunk (last rank). Layers: the largest rank's figures (P' = min(ranks, layers) ranks hold layers). */
typedef struct {
    int ranks, active, layers, len;
    uint64_t seq_weights, seq_acc, seq_buffers;  /* sequence split, every rank */
    uint64_t lay_weights, lay_acc, lay_buffers;  /* layer split, the largest rank (its total) */
    uint64_t lay_total;                          /* max over ranks of weights + accumulators + buffers */
    int64_t n_inputs;                            /* H files a run writes (before pooling) */
} tq_calib_mem;
/* diag: 0 full H, 1 diagonal everywhere (--diag), 2 diagonal for routed experts only (--diag-experts). */
tq_status tq_calib_estimate(const char* config_json, int ranks, int seq_len, int diag, tq_calib_mem* out);

#endif
