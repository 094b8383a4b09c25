/* artifact_publish.c — tq_publish (see artifact.h): turn a verified artifact into a self-contained
 * directory ready to upload to a model hub.
 *
 *   OUT/
 *     model-0000k-of-0000n.tqa.h5   shards (copied, each via temp name + fsync + rename)
 *     model.tqa.index.json          index
 *     README.md                     model card: source + checksums, codec plan by role, size and bits
 *                                   per weight, validation metrics, how to load (C, Python, export),
 *                                   how it was produced (tqpipe version + the exact job file)
 *     LICENSE*                      copied from the source checkpoint directory when present
 *     SHA256SUMS                    "<sha256>  <file>" for every other file, sorted by name
 * The artifact is verified first (every checksum); publishing refuses one that does not verify. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact.h"
#include "fileio.h" /* defines: tq_atomic_*, tq_read_file, tq_mkdirs, tq_write_file_atomic */
#include "hash.h"   /* defines: tq_sha256_file */
#include "log.h"

// ------------------------------------------------------------------------------------------------
// growing text buffer for the model card

typedef struct {
    char* s;
    size_t n, cap;
    int oom;
} tq_sbuf;

static void tq_sb_printf(tq_sbuf* b, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void tq_sb_printf(tq_sbuf* b, const char* fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char* ns = realloc(b->s, nc);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

static void tq_sb_text(tq_sbuf* b, const char* s)
{
    tq_sb_printf(b, "%s", s);
}

// ------------------------------------------------------------------------------------------------
// files

static tq_status tq_copy_file(const char* src, const char* dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return tq_errno_status(errno, "opening", src);
    struct stat st;
    if (fstat(in, &st) != 0) {
        int e = errno;
        close(in);
        return tq_errno_status(e, "stat of", src);
    }
    tq_atomic_file f;
    tq_status rc = tq_atomic_open(&f, dst);
    if (rc != TQ_OK) {
        close(in);
        return rc;
    }
    const size_t cap = (size_t)8 << 20;
    char* buf = malloc(cap);
    if (!buf) rc = tq_fail(TQ_ERR_NOMEM, "out of memory copying %s", src);
    for (uint64_t off = 0; rc == TQ_OK && off < (uint64_t)st.st_size;) {
        size_t n = (uint64_t)st.st_size - off < cap ? (size_t)((uint64_t)st.st_size - off) : cap;
        rc = tq_pread_full(in, buf, n, off, src);
        if (rc == TQ_OK) rc = tq_write_full(f.fd, buf, n, f.tmp);
        off += n;
    }
    free(buf);
    close(in);
    if (rc != TQ_OK) {
        tq_atomic_abort(&f);
        return rc;
    }
    return tq_atomic_commit(&f);
}

static int tq_is_license_name(const char* n)
{
    static const char* const pre[] = {"license", "licence", "copying", "notice", "use_policy"};
    char low[64];
    size_t i = 0;
    for (; n[i] && i < sizeof low - 1; i++) low[i] = (char)tolower((unsigned char)n[i]);
    low[i] = '\0';
    for (size_t k = 0; k < sizeof pre / sizeof pre[0]; k++)
        if (!strncmp(low, pre[k], strlen(pre[k]))) return 1;
    return 0;
}

static int tq_cmp_str(const void* a, const void* b)
{
    return strcmp(*(const char* const*)a, *(const char* const*)b);
}

/* Guess the source checkpoint directory from the provenance JSON ("source_dir", "source", "path",
 * "model"). Returns a malloc'd path of an existing directory or NULL. */
static char* tq_source_from_provenance(const char* prov)
{
    if (!prov || !*prov) return NULL;
    json_t* j = json_loads(prov, 0, NULL);
    if (!j) return NULL;
    static const char* const keys[] = {"source_dir", "source", "path", "model", "model_path"};
    char* out = NULL;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0] && !out; k++) {
        const char* s = json_string_value(json_object_get(j, keys[k]));
        struct stat st;
        if (s && stat(s, &st) == 0 && S_ISDIR(st.st_mode)) out = strdup(s);
    }
    json_decref(j);
    return out;
}

// ------------------------------------------------------------------------------------------------
// model card

typedef struct {
    char role[32];
    int64_t tensors, params;
    uint64_t bytes;
    char codecs[160];
} tq_role_sum;

/* JSON text, pretty printed; objects/arrays with more than `max_items` entries are replaced by a
 * note (per-tensor checksum maps of a 40,000-tensor model do not belong in a model card). */
static void tq_card_pretty_json(tq_sbuf* b, const char* text, size_t max_items)
{
    json_t* j = json_loads(text, 0, NULL);
    if (j && json_is_object(j)) {
        const char* key;
        json_t* v;
        json_object_foreach(j, key, v)
        {
            size_t n = json_is_object(v) ? json_object_size(v) : json_is_array(v) ? json_array_size(v) : 0;
            if (n > max_items) {
                char note[160];
                snprintf(note, sizeof note, "(%zu entries: see \"provenance\" in model.tqa.index.json)", n);
                json_object_set_new(j, key, json_string(note));
            }
        }
    }
    char* pretty = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) : NULL;
    tq_sb_printf(b, "```json\n%s\n```\n", pretty ? pretty : text);
    free(pretty);
    json_decref(j);
}

static void tq_card_scalar(tq_sbuf* b, json_t* v)
{
    if (json_is_string(v)) tq_sb_printf(b, "%s", json_string_value(v));
    else if (json_is_integer(v)) tq_sb_printf(b, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v)) tq_sb_printf(b, "%.6g", json_real_value(v));
    else if (json_is_boolean(v)) tq_sb_text(b, json_is_true(v) ? "yes" : "no");
}

/* Metrics: a table for an array "runs" of flat objects (scalar columns, long strings left out), then
 * the whole JSON folded. */
static void tq_card_metrics(tq_sbuf* b, const char* text)
{
    json_t* j = json_loads(text, 0, NULL);
    json_t* runs = j ? json_object_get(j, "runs") : NULL;
    if (json_is_array(runs) && json_array_size(runs) > 0 && json_is_object(json_array_get(runs, 0))) {
        const char* cols[32];
        int nc = 0;
        const char* key;
        json_t* v;
        json_object_foreach(json_array_get(runs, 0), key, v)
        {
            if (nc == 32 || json_is_object(v) || json_is_array(v) || json_is_null(v)) continue;
            if (json_is_string(v) && strlen(json_string_value(v)) > 32) continue;
            cols[nc++] = key;
        }
        for (int c = 0; c < nc; c++) tq_sb_printf(b, "| %s ", cols[c]);
        tq_sb_text(b, "|\n");
        for (int c = 0; c < nc; c++) tq_sb_text(b, "|---");
        tq_sb_text(b, "|\n");
        for (size_t r = 0; r < json_array_size(runs); r++) {
            for (int c = 0; c < nc; c++) {
                tq_sb_text(b, "| ");
                tq_card_scalar(b, json_object_get(json_array_get(runs, r), cols[c]));
                tq_sb_text(b, " ");
            }
            tq_sb_text(b, "|\n");
        }
        tq_sb_text(b, "\n<details><summary>all metrics (JSON)</summary>\n\n");
        tq_card_pretty_json(b, text, (size_t)-1);
        tq_sb_text(b, "\n</details>\n");
    } else {
        tq_card_pretty_json(b, text, (size_t)-1);
    }
    json_decref(j);
}

static const char* tq_human(double bytes, char* buf, size_t cap)
{
    const char* u[] = {"B", "kB", "MB", "GB", "TB"};
    int k = 0;
    while (bytes >= 1000.0 && k < 4) {
        bytes /= 1000.0;
        k++;
    }
    snprintf(buf, cap, k ? "%.2f %s" : "%.0f %s", bytes, u[k]);
    return buf;
}

static void tq_card(tq_sbuf* b, const tq_artifact* a, const char* job_text, const char* job_name,
                    char** files, uint64_t* sizes, int nfiles)
{
    const char* name = *tq_artifact_model_name(a) ? tq_artifact_model_name(a) : "model";
    int64_t params = tq_artifact_total_params(a);
    uint64_t bytes = tq_artifact_total_bytes(a);
    double bpw = params > 0 ? 8.0 * (double)bytes / (double)params : 0.0;
    uint64_t file_bytes = 0;
    for (int i = 0; i < nfiles; i++) file_bytes += sizes[i];

    tq_sb_printf(b, "# %s — tqpipe %.2f bits/weight\n\n", name, bpw);
    tq_sb_printf(b, "Weights of **%s** compressed with tqpipe %s (TurboQuant-style rotated\n"
                    "Lloyd-Max codecs and classic round-to-nearest codecs, chosen per tensor). Format: `%s` version %d\n"
                    "(HDF5 shards + JSON index; see FORMAT.md in the tqpipe sources).\n\n",
                 name, TQ_VERSION, TQ_ARTIFACT_FORMAT, TQ_ARTIFACT_FORMAT_VERSION);
    tq_sb_text(b, "## Size\n\n| | |\n|---|---|\n");
    tq_sb_printf(b, "| tensors | %lld |\n| parameters | %lld |\n", (long long)tq_artifact_count(a), (long long)params);
    char h1[32], h2[32], h3[32];
    tq_sb_printf(b, "| packed tensor bytes | %llu (%s) |\n", (unsigned long long)bytes, tq_human((double)bytes, h1, sizeof h1));
    tq_sb_printf(b, "| bits per weight (every tensor, all overhead of codes/norms/codebooks) | %.4f |\n", bpw);
    tq_sb_printf(b, "| files (shards + index) | %llu (%s) |\n| bf16 size of the same weights | %s (%.2fx smaller) |\n\n",
                 (unsigned long long)file_bytes, tq_human((double)file_bytes, h2, sizeof h2),
                 tq_human(2.0 * (double)params, h3, sizeof h3), bytes ? 2.0 * (double)params / (double)bytes : 0.0);

    /* codec plan by role */
    tq_role_sum* rs = calloc((size_t)tq_artifact_count(a) + 1, sizeof *rs);
    int nr = 0;
    for (int64_t i = 0; rs && i < tq_artifact_count(a); i++) {
        const tq_artifact_tensor* t = tq_artifact_tensor_at(a, i);
        int r = 0;
        while (r < nr && strcmp(rs[r].role, t->role)) r++;
        if (r == nr) snprintf(rs[nr++].role, sizeof rs[0].role, "%s", t->role);
        rs[r].tensors++;
        rs[r].params += t->rows * t->cols;
        rs[r].bytes += t->bytes;
        char label[40];
        snprintf(label, sizeof label, "%s:g%d", t->codec.name, t->codec.group);
        if (t->codec.kind == TQ_CODEC_FP16 || t->codec.kind == TQ_CODEC_BF16 || t->codec.kind == TQ_CODEC_F32)
            snprintf(label, sizeof label, "%s", t->codec.name);
        /* add label to the role's list once */
        char* c = rs[r].codecs;
        int found = 0;
        for (char* p = c; *p;) {
            size_t l = strcspn(p, ",");
            if (l == strlen(label) && !strncmp(p, label, l)) found = 1;
            p += l;
            if (*p == ',') p++;
        }
        if (!found && strlen(c) + strlen(label) + 2 < sizeof rs[r].codecs) {
            if (*c) strcat(c, ",");
            strcat(c, label);
        }
    }
    tq_sb_text(b, "## Codec plan by role\n\n| role | tensors | parameters | codecs | bytes | bits/weight |\n"
                  "|---|---:|---:|---|---:|---:|\n");
    for (int r = 0; r < nr; r++) {
        int best = r;
        for (int s = r + 1; s < nr; s++)
            if (strcmp(rs[s].role, rs[best].role) < 0) best = s;
        tq_role_sum tmp = rs[r];
        rs[r] = rs[best];
        rs[best] = tmp;
        tq_sb_printf(b, "| %s | %lld | %lld | %s | %llu | %.3f |\n", rs[r].role, (long long)rs[r].tensors,
                     (long long)rs[r].params, rs[r].codecs, (unsigned long long)rs[r].bytes,
                     rs[r].params ? 8.0 * (double)rs[r].bytes / (double)rs[r].params : 0.0);
    }
    free(rs);
    tq_sb_text(b, "\nThe exact per-tensor plan is the `plan` field of `model.tqa.index.json`.\n\n");

    tq_sb_text(b, "## Source model and checksums\n\n");
    if (*tq_artifact_provenance(a))
        tq_card_pretty_json(b, tq_artifact_provenance(a), 64);
    else
        tq_sb_text(b, "No provenance was recorded.\n");
    tq_sb_text(b, "\n## Validation metrics\n\n");
    if (*tq_artifact_metrics(a))
        tq_card_metrics(b, tq_artifact_metrics(a));
    else
        tq_sb_text(b, "No validation metrics were recorded (the validate stage did not run).\n");

    tq_sb_text(b, "\n## Files\n\n| file | bytes |\n|---|---:|\n");
    for (int i = 0; i < nfiles; i++) tq_sb_printf(b, "| %s | %llu |\n", files[i], (unsigned long long)sizes[i]);
    tq_sb_text(b, "\n`SHA256SUMS` lists the SHA-256 of every file: check with `sha256sum -c SHA256SUMS`.\n"
                  "`tqpipe verify .` recomputes every tensor's XXH3-64 checksum.\n\n");

    tq_sb_text(b, "## How to load\n\n### C (tqpipe library)\n\n```c\n#include \"artifact.h\"\n\n"
                  "tq_artifact* a = NULL;\n"
                  "if (tq_artifact_open(\"path/to/this/dir\", &a) != TQ_OK) puts(tq_last_error());\n"
                  "const tq_artifact_tensor* t = tq_artifact_find(a, \"model.embed_tokens.weight\");\n"
                  "float* w = malloc((size_t)t->rows * t->cols * sizeof(float));\n"
                  "tq_artifact_dequantize(a, t, w, (size_t)t->rows * t->cols); /* checksum verified */\n"
                  "tq_artifact_close(&a);\n```\n\n");
    tq_sb_text(b, "### Python (h5py + hdf5plugin + numpy)\n\n```python\n"
                  "# pip install h5py hdf5plugin numpy; PYTHONPATH=<tqpipe>/python\n"
                  "import tqpipe_reader\n"
                  "art = tqpipe_reader.open(\"path/to/this/dir\")\n"
                  "print(art.names()[:5])\n"
                  "w = art.dequantize(art.names()[0])   # numpy float32, original shape\n```\n\n");
    tq_sb_text(b, "### As a Hugging Face checkpoint\n\n```sh\n"
                  "tqpipe export path/to/this/dir --to safetensors hf-bf16/ --dtype bf16\n```\n"
                  "writes a dequantized bf16 checkpoint (plus config.json) for transformers, vLLM or llama.cpp's converter.\n\n");

    tq_sb_printf(b, "## How it was produced\n\ntqpipe %s", TQ_VERSION);
    if (job_text && *job_text) {
        tq_sb_printf(b, " with the job file%s%s%s:\n\n```yaml\n%s%s```\n", job_name ? " `" : "", job_name ? job_name : "",
                     job_name ? "`" : "", job_text, job_text[strlen(job_text) - 1] == '\n' ? "" : "\n");
    } else {
        tq_sb_text(b, "; no job file was recorded.\n");
    }
}

// ------------------------------------------------------------------------------------------------

tq_status tq_publish(const char* artifact_dir, const char* out_dir, const char* job_path, const char* source_dir)
{
    TQ_RETURN_IF(!artifact_dir || !out_dir, TQ_ERR_ARG, "tq_publish: artifact and output directories are required");
    tq_verify_report rep;
    tq_status rc = tq_artifact_verify(artifact_dir, NULL, 0, 1, &rep);
    if (rc != TQ_OK) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", tq_last_error());
        return tq_fail(rc, "refusing to publish %s: it does not verify: %s", artifact_dir, msg);
    }
    tq_artifact* a = NULL;
    TQ_FORWARD(tq_artifact_open(artifact_dir, &a));
    char* job_text = NULL;
    char* src_guess = NULL;
    char** files = NULL;
    uint64_t* sizes = NULL;
    int nfiles = 0;
    tq_sbuf card = {0};
    char path[4200], src[4200];
    int ns = tq_artifact_shard_count(a);
    TQ_CHECK_GOTO(tq_mkdirs(out_dir), done);
    {
        char r1[PATH_MAX], r2[PATH_MAX];
        int same = realpath(artifact_dir, r1) && realpath(out_dir, r2) && !strcmp(r1, r2);
        files = calloc((size_t)ns + 64, sizeof *files);
        sizes = calloc((size_t)ns + 64, sizeof *sizes);
        TQ_GOTO_FAIL(!files || !sizes, TQ_ERR_NOMEM, done, "out of memory");
        for (int k = 0; k <= ns; k++) {
            char name[64];
            if (k < ns)
                tq_artifact_shard_name(k, ns, name, sizeof name);
            else
                snprintf(name, sizeof name, "%s", TQ_ARTIFACT_INDEX_NAME);
            snprintf(src, sizeof src, "%s/%s", artifact_dir, name);
            snprintf(path, sizeof path, "%s/%s", out_dir, name);
            if (!same) TQ_CHECK_GOTO(tq_copy_file(src, path), done);
            files[nfiles++] = strdup(name);
        }
    }
    /* license files */
    if (!source_dir) source_dir = src_guess = tq_source_from_provenance(tq_artifact_provenance(a));
    if (source_dir) {
        DIR* d = opendir(source_dir);
        struct dirent* e;
        while (d && (e = readdir(d)) != NULL && nfiles < ns + 60) {
            if (e->d_name[0] == '.' || !tq_is_license_name(e->d_name)) continue;
            snprintf(src, sizeof src, "%s/%s", source_dir, e->d_name);
            struct stat st;
            if (stat(src, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            snprintf(path, sizeof path, "%s/%s", out_dir, e->d_name);
            if ((rc = tq_copy_file(src, path)) != TQ_OK) break;
            files[nfiles++] = strdup(e->d_name);
        }
        if (d) closedir(d);
        if (rc != TQ_OK) goto done;
    }
    /* job text: the given file, else the one recorded in the index */
    if (job_path) {
        TQ_CHECK_GOTO(tq_read_file(job_path, &job_text, NULL), done);
    } else {
        job_text = strdup(tq_artifact_job(a));
    }
    for (int i = 0; i < nfiles; i++) {
        TQ_GOTO_FAIL(!files[i], TQ_ERR_NOMEM, done, "out of memory");
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", out_dir, files[i]);
        sizes[i] = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    }
    tq_card(&card, a, job_text, job_path, files, sizes, nfiles);
    TQ_GOTO_FAIL(card.oom || !card.s, TQ_ERR_NOMEM, done, "out of memory writing the model card");
    snprintf(path, sizeof path, "%s/README.md", out_dir);
    TQ_CHECK_GOTO(tq_write_file_atomic(path, card.s, card.n), done);
    files[nfiles++] = strdup("README.md");
    TQ_GOTO_FAIL(!files[nfiles - 1], TQ_ERR_NOMEM, done, "out of memory");
    qsort(files, (size_t)nfiles, sizeof *files, tq_cmp_str);
    /* SHA256SUMS over every other file */
    {
        tq_sbuf s = {0};
        for (int i = 0; i < nfiles; i++) {
            char hex[65];
            snprintf(path, sizeof path, "%s/%s", out_dir, files[i]);
            TQ_CHECK_GOTO(tq_sha256_file(path, hex), done);
            tq_sb_printf(&s, "%s  %s\n", hex, files[i]);
        }
        TQ_GOTO_FAIL(s.oom || !s.s, TQ_ERR_NOMEM, done, "out of memory");
        snprintf(path, sizeof path, "%s/SHA256SUMS", out_dir);
        rc = tq_write_file_atomic(path, s.s, s.n);
        free(s.s);
        if (rc != TQ_OK) goto done;
    }
    TQ_LOG(TQ_LOG_INFO, "publish: %s -> %s (%d files, %lld tensors verified)", artifact_dir, out_dir, nfiles,
           (long long)rep.tensors_checked);
done:
    for (int i = 0; files && i < nfiles; i++) free(files[i]);
    free(files);
    free(sizes);
    free(card.s);
    free(job_text);
    free(src_guess);
    tq_artifact_close(&a);
    return rc;
}
