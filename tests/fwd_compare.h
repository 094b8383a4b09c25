/* fwd_compare.h — what the GPU forward-pass tests (test_fwd_gpu.c, test_gpuhybrid.c, test_gpupacked.c)
 * share: comparing two logit matrices (max / mean absolute difference against the reference's magnitude,
 * top-1 agreement), the CPU reference run "one prefill of P tokens, then D single-token steps", and a
 * prefill through a model split in two on the GPU (what --parallel layers does, without MPI). Include
 * once per test. */
#ifndef TQ_FWD_COMPARE_H
#define TQ_FWD_COMPARE_H

#include <math.h>
#include <stddef.h>

#include <stdlib.h>

#include "model.h"
#include "model_gpu.h"

typedef struct {
    double max_abs, max_ref, mean_abs, mean_ref, top1;
} cmp_result;

/* a = reference logits, b = tested logits, both [rows x V]. A NaN difference counts as infinite. */
static cmp_result compare(const float* a, const float* b, int rows, int V)
{
    cmp_result r = {0, 0, 0, 0, 0};
    int agree = 0;
    for (int t = 0; t < rows; t++) {
        const float* x = a + (size_t)t * V;
        const float* y = b + (size_t)t * V;
        int ax = 0, ay = 0;
        for (int i = 0; i < V; i++) {
            double d = fabs((double)x[i] - y[i]);
            if (d > r.max_abs || d != d) r.max_abs = d != d ? INFINITY : d;
            if (fabs(x[i]) > r.max_ref) r.max_ref = fabs(x[i]);
            r.mean_abs += d;
            r.mean_ref += fabs(x[i]);
            if (x[i] > x[ax]) ax = i;
            if (y[i] > y[ay]) ay = i;
        }
        agree += ax == ay;
    }
    r.top1 = (double)agree / rows;
    r.mean_abs /= (double)rows * V;
    r.mean_ref /= (double)rows * V;
    return r;
}

/* CPU logits [(prefill + decode) x V]: one prefill, then single-token steps. */
static tq_status run_cpu_steps(tq_model* m, tq_kv_cache* kv, const int* tok, int prefill, int decode, float* lg)
{
    int V = tq_model_vocab(m);
    tq_kv_reset(kv);
    TQ_FORWARD(tq_model_forward(m, kv, tok, prefill, 0, lg));
    for (int s = 0; s < decode; s++)
        TQ_FORWARD(tq_model_forward(m, kv, tok + prefill + s, 1, prefill + s, lg + (size_t)(prefill + s) * V));
    return TQ_OK;
}

/* GPU logits [T x V] of tok through p0 (the first layers, with the embedding) then p1 (the rest, with the
 * head), the activations handed over through the host; k0 / k1 are the halves' caches. */
static tq_status gpu_split_prefill(tq_gmodel* p0, tq_gmodel* p1, tq_gkv* k0, tq_gkv* k1, const int* tok, int T,
                                   float* lg)
{
    float* x = malloc((size_t)T * tq_gmodel_hidden(p0) * sizeof(float));
    tq_status rc = x ? TQ_OK : TQ_ERR_NOMEM;
    if (rc == TQ_OK) rc = tq_gmodel_embed(p0, tok, T);
    if (rc == TQ_OK) rc = tq_gmodel_layers(p0, k0, T, 0);
    if (rc == TQ_OK) rc = tq_gmodel_x_get(p0, x, T);
    if (rc == TQ_OK) rc = tq_gmodel_x_set(p1, x, T);
    if (rc == TQ_OK) rc = tq_gmodel_layers(p1, k1, T, 0);
    if (rc == TQ_OK) rc = tq_gmodel_head(p1, T, lg);
    free(x);
    return rc;
}

#endif
