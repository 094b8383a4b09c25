/* codec_stats.c — `tqpipe codec-stats`: exact bits/weight, NMSE (‖W−Ŵ‖²/‖W‖²), max |W−Ŵ| and
 * quantize / dequantize time of one codec on Gaussian data or on one checkpoint tensor.
 * A checkpoint tensor is streamed in row slices (each quantized on its own: slices concatenate to the
 * whole tensor's bytes), so memory stays bounded whatever the tensor's size.
 *   tqpipe codec-stats --codec tq4 --gaussian 1048576
 *   tqpipe codec-stats --codec tq4r4 --group 128 --tensor ckpt_dir:model.layers.0.mlp.up_proj.weight --json */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt.h"     // defines: tq_ckpt_open, tq_ckpt_find, tq_ckpt_read_f32
#include "codec.h"    // defines: tq_codec_parse, tq_qtensor_alloc, tq_quantize, tq_dequantize_rows_ref
#include "commands.h"
#include "hadamard.h" // defines: tq_mix64

static void usage(FILE* f)
{
    fprintf(f,
            "usage: tqpipe codec-stats --codec C [--group G] (--gaussian N | --tensor CKPT:NAME) [options]\n"
            "\n"
            "Quantize with codec C, dequantize, and print the exact bits per weight (every stored byte:\n"
            "codes, norms/scales, codebooks), NMSE = |W-W'|^2/|W|^2, max |W-W'| and the timings.\n"
            "\n"
            "  --codec C        tq1..tq4, tq{b}r{r} (e.g. tq4r4), bin1, ter, rtn2..rtn8, int8, fp16, bf16, f32\n"
            "  --group G        group size along the columns: 64, 128 (default) or 256\n"
            "  --gaussian N     N i.i.d. N(0,1) values (rows of --cols, default 4096; rows = ceil(N/cols))\n"
            "  --cols C         row length for --gaussian\n"
            "  --tensor CKPT:NAME  one tensor of a checkpoint (directory or .safetensors file)\n"
            "  --seed S         job seed (rotation seed = tq_tensor_seed(S, tensor name)); default 0\n"
            "  --plain-norm     tq codecs: store the plain group norm instead of the least-squares scale\n"
            "  --threads T      CPU threads (default: TQ_THREADS or all cores; bytes never depend on it)\n"
            "  --repeat N       time quantize/dequantize N times per slice, keep the fastest (default 1)\n"
            "  --json           print one JSON object\n"
            "Throughput is MB/s of fp32 weights (4 bytes per weight) through the CPU reference, or the GPU\n"
            "when this build has CUDA and a device: wall time, and CPU time of all threads (cpu_s).\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (all threads): robust to other jobs sharing the cores. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* N(0,1) values from a counter-based generator: value i depends only on (seed, i). */
static void gauss_fill(float* x, int64_t i0, int64_t n, uint64_t seed)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t k = (uint64_t)(i0 + i);
        uint64_t a = tq_mix64(seed * 0x9E3779B97F4A7C15ull + 2 * (k / 2) + 1);
        uint64_t b = tq_mix64(a ^ 0xA0761D6478BD642Full);
        double u1 = ((a >> 11) + 0.5) / 9007199254740992.0, u2 = (double)(b >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(k % 2 ? r * sin(2 * M_PI * u2) : r * cos(2 * M_PI * u2));
    }
}

int tq_cmd_codec_stats(int argc, char** argv)
{
    const char *codec_name = NULL, *tensor_arg = NULL;
    int64_t gauss_n = 0, gcols = 4096;
    int group = 0, json = 0, plain = 0, threads = 0, repeat = 1;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--codec") && has) {
            codec_name = argv[++i];
        } else if (!strcmp(a, "--group") && has) {
            group = atoi(argv[++i]);
        } else if (!strcmp(a, "--gaussian") && has) {
            gauss_n = (int64_t)strtod(argv[++i], NULL);
        } else if (!strcmp(a, "--cols") && has) {
            gcols = atoll(argv[++i]);
        } else if (!strcmp(a, "--tensor") && has) {
            tensor_arg = argv[++i];
        } else if (!strcmp(a, "--seed") && has) {
            seed = strtoull(argv[++i], NULL, 0);
        } else if (!strcmp(a, "--threads") && has) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(a, "--repeat") && has) {
            repeat = atoi(argv[++i]);
            if (repeat < 1) repeat = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--plain-norm")) {
            plain = 1;
        } else {
            fprintf(stderr, "tqpipe codec-stats: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!codec_name || (!gauss_n == !tensor_arg) || gauss_n < 0 || gcols < 1) {
        fprintf(stderr, "tqpipe codec-stats: need --codec and exactly one of --gaussian N (N > 0) or --tensor\n\n");
        usage(stderr);
        return 2;
    }
    tq_codec codec;
    if (tq_codec_parse(codec_name, group, &codec) != TQ_OK) {
        fprintf(stderr, "tqpipe codec-stats: %s\n", tq_last_error());
        return 2;
    }
    if (threads > 0) tq_codec_set_threads(threads);

    tq_ckpt* ck = NULL;
    const tq_tensor_info* ti = NULL;
    char src[1200];
    char tname[TQ_MAX_NAME] = "gaussian";
    int64_t rows, cols;
    int rc = 1;
    if (tensor_arg) {
        const char* colon = strrchr(tensor_arg, ':');
        if (!colon || colon == tensor_arg || !colon[1]) {
            fprintf(stderr, "tqpipe codec-stats: --tensor wants CKPT:NAME (got '%s')\n", tensor_arg);
            return 2;
        }
        char path[1024];
        snprintf(path, sizeof path, "%.*s", (int)(colon - tensor_arg), tensor_arg);
        snprintf(tname, sizeof tname, "%s", colon + 1);
        if (tq_ckpt_open(path, &ck) != TQ_OK) {
            fprintf(stderr, "tqpipe codec-stats: %s\n", tq_last_error());
            return 1;
        }
        ti = tq_ckpt_find(ck, tname);
        if (!ti) {
            fprintf(stderr, "tqpipe codec-stats: tensor '%s' not in checkpoint %s (tqpipe inspect %s lists them)\n",
                    tname, path, path);
            tq_ckpt_free(&ck);
            return 1;
        }
        rows = tq_tensor_rows(ti);
        cols = tq_tensor_cols(ti);
        snprintf(src, sizeof src, "%s:%s", path, tname);
    } else {
        cols = gcols;
        rows = (gauss_n + cols - 1) / cols;
        snprintf(src, sizeof src, "gaussian");
    }
    uint64_t tseed = tq_tensor_seed(seed, tname);

    /* row slices of at most ~16M weights */
    int64_t slice = (int64_t)(16 << 20) / cols;
    if (slice < 1) slice = 1;
    if (slice > rows) slice = rows;
    float* w = malloc((size_t)(slice * cols) * sizeof(float));
    float* o = malloc((size_t)(slice * cols) * sizeof(float));
    if (!w || !o) {
        fprintf(stderr, "tqpipe codec-stats: out of memory for a %lld x %lld slice\n", (long long)slice, (long long)cols);
        goto out;
    }
    memset(o, 0, (size_t)(slice * cols) * sizeof(float)); /* first touch outside the timed dequantize */
    (void)tq_gpu_available();                              /* device probe (CUDA init) outside the timing */
    double err2 = 0, sum2 = 0, maxe = 0, tq = 0, tdq = 0, cq = 0, cdq = 0;
    size_t part_bytes[TQ_QT_MAX_PARTS] = {0};
    tq_qtensor q;
    memset(&q, 0, sizeof q);
    for (int64_t r0 = 0; r0 < rows; r0 += slice) {
        int64_t nr = rows - r0 < slice ? rows - r0 : slice;
        size_t n = (size_t)(nr * cols);
        if (ck) {
            if (tq_ckpt_read_f32(ck, ti, r0, nr, w, n * sizeof(float)) != TQ_OK) {
                fprintf(stderr, "tqpipe codec-stats: %s\n", tq_last_error());
                goto out;
            }
        } else {
            gauss_fill(w, r0 * cols, (int64_t)n, seed);
        }
        if (tq_qtensor_alloc(&q, &codec, nr, cols, tseed) != TQ_OK) {
            fprintf(stderr, "tqpipe codec-stats: %s\n", tq_last_error());
            goto out;
        }
        if (plain) q.flags |= TQ_QFLAG_PLAIN_NORM;
        double bq = 1e30, bdq = 1e30, bcq = 1e30, bcdq = 1e30;
        tq_status s = TQ_OK;
        for (int it = 0; it < repeat && s == TQ_OK; it++) {
            double c0 = cpu_s(), t0 = now_s();
            s = tq_quantize(w, &q, tname);
            double c1 = cpu_s(), t1 = now_s();
            if (s == TQ_OK) s = tq_dequantize(&q, o);
            double c2 = cpu_s(), t2 = now_s();
            if (t1 - t0 < bq) bq = t1 - t0, bcq = c1 - c0;
            if (t2 - t1 < bdq) bdq = t2 - t1, bcdq = c2 - c1;
        }
        if (s != TQ_OK) {
            fprintf(stderr, "tqpipe codec-stats: %s\n", tq_last_error());
            tq_qtensor_release(&q);
            goto out;
        }
        tq += bq;
        tdq += bdq;
        cq += bcq;
        cdq += bcdq;
        for (int i = 0; i < q.nparts; i++)
            part_bytes[i] = q.part[i].row_bytes ? part_bytes[i] + q.part[i].bytes : q.part[i].bytes;
        for (size_t i = 0; i < n; i++) {
            double d = (double)w[i] - (double)o[i];
            err2 += d * d;
            sum2 += (double)w[i] * (double)w[i];
            if (fabs(d) > maxe) maxe = fabs(d);
        }
        if (r0 + nr < rows) tq_qtensor_release(&q);
    }
    size_t bytes = tq_codec_bytes(&codec, rows, cols);
    double nw = (double)rows * (double)cols;
    double bpw = tq_codec_bpw(&codec, rows, cols);
    double nmse = sum2 > 0 ? err2 / sum2 : err2;
    double mbq = tq > 0 ? 4.0 * nw / tq / 1e6 : 0, mbd = tdq > 0 ? 4.0 * nw / tdq / 1e6 : 0;
    const char* dev = tq_gpu_available() ? "gpu" : "cpu";
    if (json) {
        json_t* j = json_object();
        json_object_set_new(j, "codec", json_string(codec.name));
        json_object_set_new(j, "group", json_integer(codec.group));
        json_object_set_new(j, "source", json_string(src));
        json_object_set_new(j, "rows", json_integer(rows));
        json_object_set_new(j, "cols", json_integer(cols));
        json_object_set_new(j, "seed", json_integer((json_int_t)seed));
        json_object_set_new(j, "norm", json_string(plain ? "plain" : "least-squares"));
        json_object_set_new(j, "bytes", json_integer((json_int_t)bytes));
        json_object_set_new(j, "bits_per_weight", json_real(bpw));
        json_object_set_new(j, "nmse", json_real(nmse));
        json_object_set_new(j, "max_abs_err", json_real(maxe));
        json_object_set_new(j, "device", json_string(dev));
        json_object_set_new(j, "threads", json_integer(tq_codec_threads()));
        json_object_set_new(j, "quantize_s", json_real(tq));
        json_object_set_new(j, "dequantize_s", json_real(tdq));
        json_object_set_new(j, "quantize_mb_s", json_real(mbq));
        json_object_set_new(j, "dequantize_mb_s", json_real(mbd));
        json_object_set_new(j, "quantize_cpu_s", json_real(cq));
        json_object_set_new(j, "dequantize_cpu_s", json_real(cdq));
        json_t* parts = json_object();
        for (int i = 0; i < q.nparts; i++) json_object_set_new(parts, q.part[i].name, json_integer((json_int_t)part_bytes[i]));
        json_object_set_new(j, "parts", parts);
        char* txt = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
        printf("%s\n", txt ? txt : "{}");
        free(txt);
        json_decref(j);
    } else {
        printf("codec        %s (group %d%s)\n", codec.name, codec.group,
               (codec.kind == TQ_CODEC_TQ || codec.kind == TQ_CODEC_TQR) ? (plain ? ", plain norm" : ", least-squares norm") : "");
        printf("source       %s [%lld x %lld] = %.0f weights, seed %llu\n", src, (long long)rows, (long long)cols, nw,
               (unsigned long long)seed);
        printf("bytes        %zu (", bytes);
        for (int i = 0; i < q.nparts; i++) printf("%s%s %zu", i ? " + " : "", q.part[i].name, part_bytes[i]);
        printf(")\n");
        printf("bits/weight  %.6f\n", bpw);
        printf("NMSE         %.6e\n", nmse);
        printf("max |err|    %.6e\n", maxe);
        printf("quantize     %.3f s  (%.1f MB/s of fp32 weights, %s, %d threads; cpu %.3f s)\n", tq, mbq, dev,
               tq_codec_threads(), cq);
        printf("dequantize   %.3f s  (%.1f MB/s of fp32 weights; cpu %.3f s)\n", tdq, mbd, cdq);
    }
    tq_qtensor_release(&q);
    rc = 0;
out:
    free(w);
    free(o);
    tq_ckpt_free(&ck);
    return rc;
}
