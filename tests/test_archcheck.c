/* test_archcheck.c — helper for tests/test_synth.sh: opens a checkpoint directory, builds its descriptor
 * (tq_arch_from_ckpt), checks the inventory (tq_arch_check_ckpt) and prints
 *   tensors N / params N / fused 0|1 / digest HEX (XXH3 over every tensor's fp32 values, name order)
 * With --stats it also checks that the weights look like LLM weights: RMSNorm weights near 1, linear
 * weights with std ~ 1/sqrt(fan_in), some outlier input channels. Exit 0 when everything holds.
 * usage: test_archcheck DIR [--stats] */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "ckpt.h"
#include "hash.h"

static int cmp_double(const void* a, const void* b)
{
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char** argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_archcheck DIR [--stats]\n");
        return 2;
    }
    int stats = argc > 2 && !strcmp(argv[2], "--stats");
    tq_ckpt* c = NULL;
    tq_arch* a = NULL;
    if (tq_ckpt_open(argv[1], &c) != TQ_OK) {
        printf("FAILED open: %s\n", tq_last_error());
        return 1;
    }
    if (tq_arch_from_ckpt(c, &a) != TQ_OK) {
        printf("FAILED descriptor: %s\n", tq_last_error());
        return 1;
    }
    int fails = 0;
    if (tq_arch_check_ckpt(a, c) != TQ_OK) {
        printf("FAILED check: %s\n", tq_last_error());
        fails++;
    } else {
        printf("check ok\n");
    }
    int64_t numel = 0;
    for (int64_t i = 0; i < tq_ckpt_count(c); i++) numel += tq_tensor_numel(tq_ckpt_tensor(c, i));
    if (numel != tq_arch_param_count(a)) {
        printf("FAILED checkpoint holds %" PRId64 " values, descriptor %" PRId64 "\n", numel, tq_arch_param_count(a));
        fails++;
    }
    printf("tensors %" PRId64 "\nparams %" PRId64 "\nfused %d\n", tq_ckpt_count(c), tq_arch_param_count(a),
           a->fused_experts);

    tq_xxh_stream* hs = tq_xxh_create();
    double norm_sum = 0, norm_n = 0;
    int lin_checked = 0, lin_bad = 0, outlier_tensors = 0, outlier_checked = 0;
    for (int64_t i = 0; i < tq_ckpt_count(c); i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(c, i);
        int64_t rows = tq_tensor_rows(t), cols = tq_tensor_cols(t);
        float* v = malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * sizeof(float));
        if (!v || tq_ckpt_read_f32(c, t, 0, rows, v, (size_t)(rows * cols) * sizeof(float)) != TQ_OK) {
            printf("FAILED read %s: %s\n", t->name, tq_last_error());
            free(v);
            fails++;
            continue;
        }
        tq_xxh_update(hs, t->name, strlen(t->name));
        tq_xxh_update(hs, v, (size_t)(rows * cols) * sizeof(float));
        const tq_arch_tensor* at = tq_arch_find(a, t->name);
        if (stats && at) {
            int64_t n = rows * cols;
            for (int64_t k = 0; k < n; k++)
                if (!isfinite(v[k])) {
                    printf("FAILED %s has a non-finite value\n", t->name);
                    fails++;
                    break;
                }
            if (at->role == TQ_ROLE_NORM) {
                /* the hybrid families store zero-centred norms (applied as 1 + w) except the DeltaNet
                 * gated norm: measure every norm against the value its model applies it around */
                int zero_centred = (!strcmp(a->model_type, "qwen3_5") || !strcmp(a->model_type, "qwen3_5_moe") ||
                                    !strcmp(a->model_type, "qwen3_next")) &&
                                   !strstr(t->name, "linear_attn.norm.");
                double centre = zero_centred ? 0.0 : 1.0;
                for (int64_t k = 0; k < n; k++) norm_sum += v[k] - centre;
                norm_n += (double)n;
            }
            if (tq_role_is_linear(at->role) && at->role != TQ_ROLE_EMBED && n >= 256 && cols >= 8) {
                /* robust scale: median |w| / 0.6745 (a Gaussian's sigma), insensitive to outlier channels */
                int64_t stride = n / 4096 + 1, m = 0;
                double* sample = malloc((size_t)(n / stride + 1) * sizeof *sample);
                for (int64_t k = 0; k < n; k += stride) sample[m++] = fabs(v[k]);
                qsort(sample, (size_t)m, sizeof *sample, cmp_double);
                double rms = sample[m / 2] / 0.6745 * sqrt((double)cols);
                free(sample);
                lin_checked++;
                if (rms < 0.4 || rms > 4.0) {
                    if (lin_bad < 3) printf("weight scale off: %s sigma*sqrt(cols) = %.3f\n", t->name, rms);
                    lin_bad++;
                }
                if (cols >= 32 && rows >= 16) { /* outlier input channels: column mean |w| vs the median column */
                    double* cm = calloc((size_t)cols, sizeof *cm);
                    for (int64_t r = 0; r < rows; r++)
                        for (int64_t k = 0; k < cols; k++) cm[k] += fabs(v[r * cols + k]);
                    double mx = 0, sum = 0;
                    for (int64_t k = 0; k < cols; k++) {
                        if (cm[k] > mx) mx = cm[k];
                        sum += cm[k];
                    }
                    outlier_checked++;
                    if (mx > 4.0 * sum / (double)cols) outlier_tensors++;
                    free(cm);
                }
            }
        }
        free(v);
    }
    char hex[17];
    tq_xxh_hex(tq_xxh_digest(hs), hex);
    tq_xxh_free(&hs);
    printf("digest %s\n", hex);
    if (stats) {
        double nm = norm_n > 0 ? 1.0 + norm_sum / norm_n : 0; /* mean of (1 + w - centre) */
        printf("norm mean %.4f (relative to each family's centre, 1 = right) over %.0f values; linear tensors %d (%d off-scale); outlier channels in %d of %d\n", nm,
               norm_n, lin_checked, lin_bad, outlier_tensors, outlier_checked);
        if (norm_n > 0 && fabs(nm - 1.0) > 0.02) {
            printf("FAILED norm weights not near 1 (0 for zero-centred norms)\n");
            fails++;
        }
        if (lin_checked == 0 || lin_bad * 20 > lin_checked) {
            printf("FAILED linear weight scale\n");
            fails++;
        }
        if (outlier_checked > 0 && outlier_tensors * 4 < outlier_checked) {
            printf("FAILED too few tensors with outlier input channels\n");
            fails++;
        }
    }
    tq_arch_free(&a);
    tq_ckpt_free(&c);
    return fails ? 1 : 0;
}
