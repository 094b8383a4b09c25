/* export.c — `tqpipe export ARTIFACT_DIR --to safetensors OUT/ [--dtype bf16|fp16|f32]`: write a
 * dequantized Hugging Face checkpoint (config.json + model.safetensors, or shards + index) that
 * transformers, vLLM and llama.cpp's converter load like any other checkpoint.
 *
 * Values are exactly tqpipe's own dequantization: tq_dequantize_ref (CPU reference) to fp32, then the
 * round-to-nearest-even conversion of dtype.h (tq_f32_to_bf16 / tq_f32_to_f16), so the export equals
 * bit for bit what tqpipe's inference and tests see. One tensor at a time (packed + fp32 of the largest
 * tensor in memory); every tensor's checksum is verified as it is read. Original shapes and names. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"  /* defines: tq_artifact_open, tq_artifact_dequantize */
#include "commands.h"
#include "fileio.h"    /* defines: tq_mkdirs, tq_write_file_atomic */
#include "log.h"
#include "st_writer.h" /* defines: tq_st_writer_* */

static void export_usage(FILE* f)
{
    fprintf(f, "usage: tqpipe export ARTIFACT_DIR --to safetensors OUT_DIR [--dtype bf16|fp16|f32|orig]\n"
               "                     [--shard-size BYTES]\n\n"
               "Dequantize every tensor of a tqpipe artifact (exactly as tqpipe does: CPU reference, then\n"
               "round-to-nearest-even) into a Hugging Face safetensors checkpoint with config.json.\n"
               "  --dtype       output dtype (default bf16; orig = each tensor's source dtype)\n"
               "  --shard-size  max bytes per safetensors file (default 5000000000; suffixes K, M, G)\n");
}

static int export_parse_size(const char* s, uint64_t* out)
{
    char* end = NULL;
    double v = strtod(s, &end);
    if (!end || end == s || v < 0) return -1;
    double m = 1;
    if (*end == 'K' || *end == 'k') m = 1e3, end++;
    else if (*end == 'M' || *end == 'm') m = 1e6, end++;
    else if (*end == 'G' || *end == 'g') m = 1e9, end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (uint64_t)(v * m);
    return 0;
}

/* Export the artifact at dir into out (library entry, also used by tests). dtype TQ_DTYPE_INVALID means
 * "each tensor's original dtype". */
static tq_status export_safetensors(const char* dir, const char* out, tq_dtype dtype, uint64_t shard_bytes)
{
    tq_artifact* a = NULL;
    TQ_FORWARD(tq_artifact_open(dir, &a));
    tq_status rc = TQ_OK;
    tq_st_writer* w = NULL;
    float* buf = NULL;
    size_t cap = 0;
    TQ_CHECK_GOTO(tq_mkdirs(out), done);
    TQ_CHECK_GOTO(tq_st_writer_create_dir(out, shard_bytes, &w), done);
    TQ_CHECK_GOTO(tq_st_writer_set_metadata(w, "format", "pt"), done);
    TQ_CHECK_GOTO(tq_st_writer_set_metadata(w, "tqpipe_version", TQ_VERSION), done);
    TQ_CHECK_GOTO(tq_st_writer_set_metadata(w, "tqpipe_source", "dequantized tqpipe artifact"), done);
    for (int64_t i = 0; i < tq_artifact_count(a); i++) {
        const tq_artifact_tensor* t = tq_artifact_tensor_at(a, i);
        tq_dtype dt = dtype == TQ_DTYPE_INVALID ? t->orig_dtype : dtype;
        TQ_CHECK_GOTO(tq_st_writer_add(w, t->name, dt, t->orig_ndim, t->orig_shape), done);
    }
    TQ_CHECK_GOTO(tq_st_writer_begin(w), done);
    for (int64_t i = 0; i < tq_artifact_count(a); i++) {
        const tq_artifact_tensor* t = tq_artifact_tensor_at(a, i);
        size_t n = (size_t)t->rows * (size_t)t->cols;
        if (n > cap) {
            free(buf);
            buf = malloc(n * sizeof *buf);
            cap = buf ? n : 0;
            TQ_GOTO_FAIL(!buf, TQ_ERR_NOMEM, done, "out of memory for tensor %s (%zu values)", t->name, n);
        }
        TQ_CHECK_GOTO(tq_artifact_dequantize(a, t, buf, cap), done);
        TQ_CHECK_GOTO(tq_st_writer_write_rows_f32(w, t->name, 0, t->rows, buf, (int64_t)n), done);
    }
    TQ_CHECK_GOTO(tq_st_writer_finish(w), done);
    if (*tq_artifact_config_json(a)) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", out);
        TQ_CHECK_GOTO(tq_write_file_atomic(path, tq_artifact_config_json(a), strlen(tq_artifact_config_json(a))), done);
    } else {
        TQ_LOG(TQ_LOG_WARN, "export: the artifact %s records no config.json; add one to %s by hand", dir, out);
    }
    TQ_LOG(TQ_LOG_INFO, "export: %lld tensors, %.1f MB of weights into %d file(s) in %s", (long long)tq_artifact_count(a),
           (double)tq_st_writer_total_bytes(w) / 1e6, tq_st_writer_file_count(w), out);
done:
    free(buf);
    tq_st_writer_free(&w);
    tq_artifact_close(&a);
    return rc;
}

int tq_cmd_export(int argc, char** argv)
{
    const char* dir = NULL;
    const char* out = NULL;
    const char* to = NULL;
    tq_dtype dtype = TQ_BF16;
    uint64_t shard = 5000000000ull;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            export_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--to") && i + 2 < argc) {
            to = argv[++i];
            out = argv[++i];
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char* d = argv[++i];
            if (!strcmp(d, "bf16")) dtype = TQ_BF16;
            else if (!strcmp(d, "fp16") || !strcmp(d, "f16")) dtype = TQ_F16;
            else if (!strcmp(d, "f32") || !strcmp(d, "fp32")) dtype = TQ_F32;
            else if (!strcmp(d, "orig")) dtype = TQ_DTYPE_INVALID;
            else {
                fprintf(stderr, "tqpipe export: --dtype must be bf16, fp16, f32 or orig, not '%s'\n", d);
                return 2;
            }
        } else if (!strcmp(argv[i], "--shard-size") && i + 1 < argc) {
            if (export_parse_size(argv[++i], &shard) != 0) {
                fprintf(stderr, "tqpipe export: bad --shard-size '%s'\n", argv[i]);
                return 2;
            }
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "tqpipe export: unexpected argument '%s'\n", argv[i]);
            export_usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir || !out || !to) {
        export_usage(stderr);
        return 2;
    }
    if (strcmp(to, "safetensors")) {
        fprintf(stderr, "tqpipe export: only --to safetensors is supported (got '%s')\n", to);
        return 2;
    }
    tq_status rc = export_safetensors(dir, out, dtype, shard);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe export: %s (%s)\n", tq_last_error(), tq_status_str(rc));
        return 1;
    }
    printf("export: wrote %s\n", out);
    return 0;
}
