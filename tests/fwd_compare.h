/* fwd_compare.h — what the GPU forward-pass tests (test_fwd_gpu.c, test_gpuhybrid.c) share: comparing two
 * logit matrices (max / mean absolute difference against the reference's magnitude, top-1 agreement)
 * and the CPU reference run "one prefill of P tokens, then D single-token steps". Include once per test. */
#ifndef TQ_FWD_COMPARE_H
#define TQ_FWD_COMPARE_H

#include <math.h>
#include <stddef.h>

#include "model.h"

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

#endif
