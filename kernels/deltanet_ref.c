/* deltanet_ref.c — CPU reference of the Gated DeltaNet pieces declared in kernels/deltanet.h: causal
 * depthwise conv + SiLU with a carried state, the beta/decay gates, the recurrent gated delta rule and
 * the gated RMSNorm. Scalar C; accumulations in float like the fp32 torch fallbacks. */
#include "deltanet.h"

#include <math.h>
#include <string.h>

static float silu(float v)
{
    return v / (1.0f + expf(-v));
}

void tq_causal_conv1d_silu_ref(float* x, const float* w, float* state, int T, int C, int K, float* work)
{
    const int P = K - 1;
    float* hist = work; /* [(P + T) x C]: the carried inputs then this batch's inputs */
    if (P > 0) memcpy(hist, state, (size_t)P * C * sizeof(float));
    memcpy(hist + (size_t)P * C, x, (size_t)T * C * sizeof(float));
    for (int t = 0; t < T; t++)
        for (int c = 0; c < C; c++) {
            float s = 0.0f;
            for (int j = 0; j < K; j++) s += w[(size_t)c * K + j] * hist[(size_t)(t + j) * C + c];
            x[(size_t)t * C + c] = silu(s);
        }
    if (P > 0) memcpy(state, hist + (size_t)T * C, (size_t)P * C * sizeof(float));
}

void tq_delta_gates_ref(float* b, float* a, const float* A_log, const float* dt_bias, int T, int Hv)
{
    for (int t = 0; t < T; t++)
        for (int h = 0; h < Hv; h++) {
            size_t i = (size_t)t * Hv + h;
            b[i] = 1.0f / (1.0f + expf(-b[i]));
            float u = a[i] + dt_bias[h];
            float sp = u > 20.0f ? u : log1pf(expf(u)); /* torch softplus, threshold 20 */
            a[i] = -expf(A_log[h]) * sp;
        }
}

static void l2norm(float* x, int n)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss + 1e-6f);
    for (int i = 0; i < n; i++) x[i] *= r;
}

void tq_gated_delta_rule_ref(float* q, float* k, const float* v, const float* g, const float* beta, float* S,
                             int T, int Hk, int Hv, int dk, int dv, float* out, float* work)
{
    const float qs = 1.0f / sqrtf((float)dk);
    const int rep = Hv / Hk;
    float* d = work;
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < Hk; h++) {
            float* qh = q + (size_t)t * Hk * dk + (size_t)h * dk;
            l2norm(qh, dk);
            for (int i = 0; i < dk; i++) qh[i] *= qs;
            l2norm(k + (size_t)t * Hk * dk + (size_t)h * dk, dk);
        }
        for (int h = 0; h < Hv; h++) {
            const float* qh = q + (size_t)t * Hk * dk + (size_t)(h / rep) * dk;
            const float* kh = k + (size_t)t * Hk * dk + (size_t)(h / rep) * dk;
            const float* vh = v + (size_t)t * Hv * dv + (size_t)h * dv;
            float* Sh = S + (size_t)h * dk * dv;
            float* oh = out + (size_t)t * Hv * dv + (size_t)h * dv;
            const float decay = expf(g[(size_t)t * Hv + h]), bt = beta[(size_t)t * Hv + h];
            for (size_t i = 0; i < (size_t)dk * dv; i++) Sh[i] *= decay;
            for (int j = 0; j < dv; j++) d[j] = 0.0f;
            for (int i = 0; i < dk; i++)
                for (int j = 0; j < dv; j++) d[j] += Sh[(size_t)i * dv + j] * kh[i];
            for (int j = 0; j < dv; j++) d[j] = (vh[j] - d[j]) * bt;
            for (int i = 0; i < dk; i++)
                for (int j = 0; j < dv; j++) Sh[(size_t)i * dv + j] += kh[i] * d[j];
            for (int j = 0; j < dv; j++) oh[j] = 0.0f;
            for (int i = 0; i < dk; i++)
                for (int j = 0; j < dv; j++) oh[j] += Sh[(size_t)i * dv + j] * qh[i];
        }
    }
}

void tq_rmsnorm_gated_ref(float* o, const float* z, const float* w, int64_t rows, int n, float eps)
{
    for (int64_t r = 0; r < rows; r++) {
        float* x = o + r * n;
        const float* zr = z + r * n;
        float ss = 0.0f;
        for (int j = 0; j < n; j++) ss += x[j] * x[j];
        float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (int j = 0; j < n; j++) x[j] = w[j] * (x[j] * inv) * silu(zr[j]);
    }
}
