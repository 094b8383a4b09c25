/* allocate.h — per-tensor codec allocation under a size budget, and the plan file.
 *
 * Problem: choose one codec per tensor (from the sensitivity table, pipeline/sensitivity.h) so that
 * the sum of Ω is minimal and the sum of bytes of EVERY tensor (quantized or not) is <= the budget.
 * This is a multiple-choice knapsack (MCKP). Solver (tq_mckp_solve):
 *   1. Per tensor: drop dominated options (more bytes, no less Ω) and build the lower convex hull of
 *      (bytes, Ω).
 *   2. LP relaxation solved exactly: start from the smallest option of every tensor and take hull
 *      segments by decreasing efficiency −ΔΩ/Δbytes while they fit (equivalent to bisection on the
 *      Lagrange multiplier λ, done exactly by sorting the slopes). The LP value with the first segment
 *      that does not fit taken fractionally is a LOWER BOUND on the optimum (the Lagrangian dual).
 *   3. Integer solution: the greedy prefix, then a repair that fills the residual budget, then an
 *      exact depth-first branch and bound (LP bounds) over a "core" of the tensors whose choice is
 *      uncertain (hull slopes closest to the critical λ; every tensor when there are few), the others
 *      fixed at the greedy choice. When the core is every tensor and the search finishes within its
 *      node limit the result is proven optimal; in any case the gap to the LP bound is reported.
 * Rules fix a codec for some tensors: by role name ("norm f32") or by tensor-name glob
 * ("model.layers.*.mlp.down_proj.weight rtn8"). A rule codec the table does not list for a tensor is
 * counted with its exact bytes (tq_codec_bytes) and Ω = 0 (unmeasured).
 *
 * Plan file (plan.txt): human-readable and editable.
 *
 *   # tqpipe plan v1
 *   # budget 81260 bytes (2.5000 bpw over 260032 weights); total 81212 bytes (2.4985 bpw)
 *   # sum omega 1.234e-02; lower bound 1.230e-02; gap 4.0e-05 (0.32%); proven optimal: no
 *   model.layers.0.attention.wq.weight   tq3        # bytes=1664 omega=2.1e-04 role=attn_q
 *   ...
 *
 * Every non-comment line is "TENSOR CODEC" (whitespace separated, anything after '#' ignored); tensor
 * names are unique; CODEC is a codec label (name, or name:g<G>). */
#ifndef TQ_ALLOCATE_H
#define TQ_ALLOCATE_H

#include <stddef.h>
#include <stdint.h>

#include "sensitivity.h" /* defines: tq_sens_table, TQ_CODEC_LABEL */
#include "status.h"      /* defines: tq_status */

/* ---- generic MCKP ------------------------------------------------------------------------------- */

/* Items (tensors) 0..n-1, item i has options start[i] .. start[i+1]-1 with bytes[] and omega[]. */
typedef struct {
    int64_t n;
    const int64_t* start; /* [n + 1] */
    const uint64_t* bytes;
    const double* omega;
} tq_mckp;

typedef struct {
    int64_t core;      /* tensors searched exactly (default 48; the whole problem when n <= core) */
    int64_t max_nodes; /* branch-and-bound node limit (default 4,000,000) */
} tq_mckp_opts;

typedef struct {
    uint64_t bytes;     /* bytes of the returned choice (<= budget) */
    double omega;       /* its Σ Ω */
    double lower_bound; /* LP / Lagrangian bound: no choice within budget has Σ Ω below it */
    double lambda;      /* critical multiplier (ΔΩ per byte) */
    double greedy_omega;/* Σ Ω of the greedy + repair solution before branch and bound */
    int64_t core, nodes;
    int proven_optimal; /* 1: exhaustive search over every tensor finished (or gap == 0) */
} tq_mckp_result;

/* Solve. choice[i] gets the chosen option index (absolute, in start[i]..start[i+1]-1).
 * @return TQ_OK; TQ_ERR_ARG when even the smallest options exceed the budget (message gives the
 *         minimum bytes), an item has no option, or an Ω is negative/NaN. Local. */
tq_status tq_mckp_solve(const tq_mckp* p, uint64_t budget, const tq_mckp_opts* o, int64_t* choice,
                        tq_mckp_result* res);

/* ---- allocation over a sensitivity table --------------------------------------------------------- */

/* Budget text: "<x>bpw" (bits per weight over every weight of every tensor in the table), or bytes
 * "<x>" / "<x>B", "<x>KB|MB|GB|TB" (10^3..), "<x>KiB|MiB|GiB|TiB" (2^10..). Rounded down to bytes. */
tq_status tq_budget_parse(const char* s, int64_t total_weights, uint64_t* bytes);

typedef struct {
    char key[TQ_MAX_NAME];        /* role name, or tensor-name glob (fnmatch) */
    char codec[TQ_CODEC_LABEL];
} tq_alloc_rule;

typedef struct {
    uint64_t budget_bytes;
    const tq_alloc_rule* rules;   /* first matching rule wins */
    int n_rules;
    const char* const* codecs;    /* allowed codec labels (NULL: every codec in the table) */
    int n_codecs;
    tq_mckp_opts solver;
} tq_alloc_opts;

typedef struct {
    char tensor[TQ_MAX_NAME];
    char role[32];
    int64_t rows, cols;
    char codec[TQ_CODEC_LABEL];
    uint64_t bytes;
    double omega;
} tq_alloc_entry;

typedef struct {
    int64_t n;
    tq_alloc_entry* e;      /* sorted by tensor name */
    uint64_t budget_bytes, total_bytes;
    int64_t total_weights;
    double omega, lower_bound; /* lower_bound < 0: none (a plan that did not minimize Σ Ω) */
    int proven_optimal;
    int64_t core, nodes;
    char notes[2048];       /* extra header comment lines ('\n'-separated; tq_plan_format writes each after
                             * "# "); empty: none. Not read back by tq_plan_parse. */
} tq_plan;

/* Rules from text: one "KEY CODEC" or "KEY=CODEC" per line, '#' comments. */
tq_status tq_alloc_rules_parse(const char* text, const char* what, tq_alloc_rule** rules, int* n);

/* Choose one codec per tensor of the table. Errors: TQ_ERR_ARG (budget too small: says the minimum;
 * a rule naming a codec missing from the table for a tensor it matches; no allowed codec for a tensor).
 * Local. */
tq_status tq_allocate(const tq_sens_table* t, const tq_alloc_opts* o, tq_plan** out);

/* The uniform plan of `codec`: every tensor whose table rows list `codec` gets it, rules (o->rules) win,
 * any other tensor keeps its smallest option (norms: their stored dtype). o->budget_bytes is not enforced
 * (it is copied into the plan); o->codecs is ignored; lower_bound is -1 (none). Errors as tq_allocate.
 * Local. */
tq_status tq_plan_uniform(const tq_sens_table* t, const tq_alloc_opts* o, const char* codec, tq_plan** out);

/* Plan text (format above) and file (atomic write). */
tq_status tq_plan_format(const tq_plan* p, char** out, size_t* len);
tq_status tq_plan_write(const tq_plan* p, const char* path);
/* Parse plan text; only tensor + codec are read (bytes/Ω are comments). Errors name `what` and the line.
 * Codec labels are checked with tq_codec_label_parse. */
tq_status tq_plan_parse(const char* text, size_t len, const char* what, tq_plan** out);
tq_status tq_plan_load(const char* path, tq_plan** out);
/* Codec label for a tensor, NULL when the plan does not name it. Binary search. */
const char* tq_plan_codec(const tq_plan* p, const char* tensor);
/* The plan's entry for a tensor, NULL when the plan does not name it. Binary search. */
const tq_alloc_entry* tq_plan_entry_of(const tq_plan* p, const char* tensor);
void tq_plan_free(tq_plan** pp);

#endif
