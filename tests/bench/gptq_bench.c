/* gptq_bench.c — CPU time of GPTQ (kernels/gptq.h) vs plain quantization for one square layer with a
 * random correlated H. Built by tests/alloc.cmake (target gptq_bench, not a test); run:
 *   ./gptq_bench 2048 rtn4 tq4 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gptq.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char** argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1024;
    float* w = malloc((size_t)n * n * sizeof(float));
    double* h = malloc((size_t)n * n * sizeof(double));
    float* x = malloc((size_t)n * 64 * sizeof(float));
    srand(1);
    for (size_t i = 0; i < (size_t)n * n; i++) w[i] = (float)((rand() / (double)RAND_MAX - 0.5) * 0.05);
    /* H = XᵀX/64 + I·0.1 from 64 random "tokens" with a shared component: correlated, full rank */
    for (size_t i = 0; i < (size_t)n * 64; i++) x[i] = (float)(rand() / (double)RAND_MAX - 0.5);
    for (int a = 0; a < n; a++)
        for (int b = a; b < n; b++) {
            double s = 0;
            for (int t = 0; t < 64; t++) s += (double)x[t * n + a] * x[t * n + b];
            h[(size_t)a * n + b] = h[(size_t)b * n + a] = s / 64 + (a == b ? 0.1 : 0);
        }
    for (int c = 2; c < argc || c == 2; c++) {
        const char* name = argc > c ? argv[c] : "rtn4";
        tq_codec cc;
        if (tq_codec_parse(name, 0, &cc) != TQ_OK) return 1;
        tq_qtensor q;
        tq_qtensor_alloc(&q, &cc, n, n, 7);
        double t0 = now();
        tq_quantize_ref(w, &q, "w");
        double t1 = now();
        tq_gptq_opts o;
        tq_gptq_opts_default(&o);
        if (tq_gptq_quantize_ref(w, h, &o, &q, "w") != TQ_OK) {
            fprintf(stderr, "%s\n", tq_last_error());
            return 1;
        }
        double t2 = now();
        printf("%dx%d %s: plain %.3f s, GPTQ %.3f s (CPU reference, %s)\n", n, n, name, t1 - t0, t2 - t1,
               "OpenBLAS dgemm/dpotrf");
        tq_qtensor_release(&q);
        if (argc <= 2) break;
    }
    free(w);
    free(h);
    free(x);
    return 0;
}
