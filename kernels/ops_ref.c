/* ops_ref.c — CPU reference of the transformer ops declared in kernels/ops.h (RMSNorm, rotate_half
 * RoPE with scaling, softmax, SwiGLU, sgemm-based linear layers). Plain scalar C apart from the matrix
 * product, which OpenBLAS does. */
#include "ops.h"

#include <cblas.h> // defines: cblas_sgemm
#include <math.h>
#include <string.h>

void tq_rmsnorm_ref(float* out, const float* x, const float* w, int64_t rows, int64_t n, float eps)
{
    for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * n;
        float* o = out + r * n;
        float ss = 0.0f;
        for (int64_t j = 0; j < n; j++) ss += xr[j] * xr[j];
        ss /= (float)n;
        ss += eps;
        ss = 1.0f / sqrtf(ss);
        for (int64_t j = 0; j < n; j++) o[j] = w[j] * (ss * xr[j]);
    }
}

int tq_rope_init(tq_rope* r, int head_dim, int rot_dim, double theta, const tq_rope_scaling* sc)
{
    if (head_dim <= 0 || rot_dim <= 0 || rot_dim > head_dim || (rot_dim & 1) || rot_dim > 1024) return -1;
    memset(r, 0, sizeof *r);
    r->head_dim = head_dim;
    r->rot_dim = rot_dim;
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < rot_dim / 2; i++) {
        float f = 1.0f / powf((float)theta, (float)(2 * i) / (float)rot_dim);
        if (sc && sc->kind == TQ_ROPE_SCALE_LINEAR && sc->factor > 0) {
            f = (float)(f / sc->factor);
        } else if (sc && sc->kind == TQ_ROPE_SCALE_LLAMA3 && sc->factor > 0) {
            /* Llama 3.1: long wavelengths divided by factor, short kept, smooth blend between. */
            double lo_wl = sc->original_max_position / sc->low_freq_factor;
            double hi_wl = sc->original_max_position / sc->high_freq_factor;
            double wl = 2.0 * pi / f;
            double nf;
            if (wl < hi_wl) {
                nf = f;
            } else if (wl > lo_wl) {
                nf = f / sc->factor;
            } else {
                double smooth = (sc->original_max_position / wl - sc->low_freq_factor) /
                                (sc->high_freq_factor - sc->low_freq_factor);
                nf = (1.0 - smooth) * f / sc->factor + smooth * f;
            }
            f = (float)nf;
        }
        r->inv_freq[i] = f;
    }
    return 0;
}

void tq_rope_apply_ref(const tq_rope* r, float* x, int n_heads, int64_t pos)
{
    int half = r->rot_dim / 2;
    for (int i = 0; i < half; i++) {
        float val = (float)pos * r->inv_freq[i];
        float c = cosf(val), s = sinf(val);
        for (int h = 0; h < n_heads; h++) {
            float* v = x + (int64_t)h * r->head_dim;
            float a = v[i], b = v[i + half];
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

void tq_softmax_ref(float* x, int64_t n)
{
    float mx = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++) x[i] /= sum;
}

void tq_swiglu_ref(float* g, const float* u, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = g[i];
        v *= 1.0f / (1.0f + expf(-v));
        g[i] = v * u[i];
    }
}

void tq_matmul_ref(float* y, const float* x, const float* w, const float* bias, int64_t T, int64_t in, int64_t out)
{
    if (T == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)out, (int)in, 1.0f, w, (int)in, x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)out, (int)in, 1.0f, x, (int)in, w,
                    (int)in, 0.0f, y, (int)out);
    }
    if (bias)
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < out; o++) y[t * out + o] += bias[o];
}

void openblas_set_num_threads(int num_threads);

void tq_ops_set_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}
