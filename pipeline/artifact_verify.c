/* artifact_verify.c — full verification of a tqpipe artifact (tq_artifact_verify, see artifact.h):
 * index format, shard presence and sizes, shard root attributes, the set of tensors in every shard
 * against the index (each exactly once), every part's size against the codec layout, every checksum
 * recomputed, and the bit plan (index or given) against the index (each planned tensor exactly once,
 * with the planned codec). Every problem is logged; the first one is returned with its message. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "artifact.h"
#include "log.h" /* defines: TQ_LOG */

/* from artifact.c (internal) */
const char* tq_artifact_shard_file(const tq_artifact* a, int k, uint64_t* bytes, int64_t* ntensors, uint64_t* xxh3);
tq_status tq_artifact_file_xxh3(const char* path, uint64_t* out);

typedef struct {
    tq_status first;
    char first_msg[2048];
    tq_verify_report* rep;
} tq_vstate;

/* Record a problem: log it, keep the first. */
static void tq_vproblem(tq_vstate* v, tq_status rc)
{
    v->rep->errors++;
    TQ_LOG(TQ_LOG_ERR, "verify: %s", tq_last_error());
    if (v->first == TQ_OK) {
        v->first = rc;
        snprintf(v->first_msg, sizeof v->first_msg, "%s", tq_last_error());
    }
}

static herr_t tq_vcollect(hid_t g, const char* name, const H5L_info_t* info, void* op)
{
    (void)g;
    (void)info;
    char*** acc = op;
    size_t n = 0;
    while ((*acc)[n]) n++;
    if ((n & (n + 1)) == 0 || n < 1) { /* grow at 1, 3, 7, 15, ... */
        char** nn = realloc(*acc, (2 * n + 2) * sizeof **acc);
        if (!nn) return -1;
        *acc = nn;
    }
    (*acc)[n] = strdup(name);
    (*acc)[n + 1] = NULL;
    return (*acc)[n] ? 0 : -1;
}

/* Check the set of tensors stored in shard k against the index. Returns 0 when the shard cannot be
 * opened at all (its tensors are then not read one by one). */
static int tq_verify_shard_set(tq_vstate* v, const tq_artifact* a, int k, const char* path)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        tq_vproblem(v, tq_fail(TQ_ERR_CORRUPT, "cannot open shard %s as HDF5 (truncated or damaged)", path));
        return 0;
    }
    hid_t g = H5Gopen2(f, "tensors", H5P_DEFAULT);
    char** names = calloc(2, sizeof *names);
    hsize_t idx = 0;
    if (g < 0 || !names || H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, tq_vcollect, &names) < 0) {
        tq_vproblem(v, tq_fail(TQ_ERR_CORRUPT, "%s: cannot list /tensors (not a tqpipe shard or damaged)", path));
    } else {
        for (size_t i = 0; names[i]; i++) {
            const tq_artifact_tensor* t = tq_artifact_find(a, names[i]);
            if (!t)
                tq_vproblem(v, tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s is in the shard but not in the index", path,
                                       names[i]));
            else if (t->shard != k)
                tq_vproblem(v, tq_fail(TQ_ERR_CORRUPT, "%s: tensor %s is also here, the index puts it in shard %d",
                                       path, names[i], t->shard + 1));
        }
    }
    for (size_t i = 0; names && names[i]; i++) free(names[i]);
    free(names);
    if (g >= 0) H5Gclose(g);
    H5Fclose(f);
    return 1;
}

/* Plan lines "TENSOR CODEC[:gG]" ('#' comments): each planned tensor in the index exactly once with
 * that codec, and no index tensor missing from the plan. Skipped when the plan names no tensor. */
static void tq_verify_plan(tq_vstate* v, const tq_artifact* a, const char* plan, const char* what)
{
    int64_t n = tq_artifact_count(a);
    unsigned char* seen = calloc(n ? (size_t)n : 1, 1);
    if (!seen) {
        tq_vproblem(v, tq_fail(TQ_ERR_NOMEM, "out of memory"));
        return;
    }
    int64_t planned = 0, lineno = 0;
    const char* p = plan;
    while (p && *p) {
        const char* e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char line[1024];
        lineno++;
        if (len >= sizeof line) len = sizeof line - 1;
        memcpy(line, p, len);
        line[len] = '\0';
        p = e ? e + 1 : NULL;
        char* hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char tensor[TQ_MAX_NAME], codec[64];
        int got = sscanf(line, "%255s %63s", tensor, codec);
        if (got <= 0) continue;
        planned++;
        const tq_artifact_tensor* t = tq_artifact_find(a, tensor);
        if (!t) {
            tq_vproblem(v, tq_fail(TQ_ERR_NOTFOUND, "tensor %s (%s line %lld) is missing from the artifact", tensor,
                                   what, (long long)lineno));
            continue;
        }
        int64_t i = t - tq_artifact_tensor_at(a, 0);
        if (seen[i]++) {
            tq_vproblem(v, tq_fail(TQ_ERR_FORMAT, "tensor %s appears twice in the %s (line %lld)", tensor, what,
                                   (long long)lineno));
            continue;
        }
        if (got == 2) {
            int group = TQ_CODEC_DEFAULT_GROUP;
            char* colon = strchr(codec, ':');
            if (colon) {
                *colon = '\0';
                if (colon[1] == 'g') group = atoi(colon + 2);
            }
            int fp = t->codec.kind == TQ_CODEC_FP16 || t->codec.kind == TQ_CODEC_BF16 || t->codec.kind == TQ_CODEC_F32;
            if (strcmp(codec, t->codec.name) || (group != t->codec.group && !fp)) /* fp codecs: group unused */
                tq_vproblem(v, tq_fail(TQ_ERR_CORRUPT, "tensor %s is stored as %s:g%d but the %s (line %lld) says %s:g%d",
                                       tensor, t->codec.name, t->codec.group, what, (long long)lineno, codec, group));
        }
    }
    if (planned > 0)
        for (int64_t i = 0; i < n; i++)
            if (!seen[i])
                tq_vproblem(v, tq_fail(TQ_ERR_FORMAT, "tensor %s is in the artifact but not in the %s",
                                       tq_artifact_tensor_at(a, i)->name, what));
    free(seen);
}

tq_status tq_artifact_verify(const char* dir, const char* plan_text, int worker, int nworkers, tq_verify_report* report)
{
    tq_verify_report dummy;
    if (!report) report = &dummy;
    memset(report, 0, sizeof *report);
    if (nworkers < 1) nworkers = 1;
    tq_vstate v = {TQ_OK, "", report};
    tq_artifact* a = NULL;
    tq_status rc = tq_artifact_open(dir, &a);
    if (rc != TQ_OK) {
        report->errors = 1;
        return rc;
    }
    int ns = tq_artifact_shard_count(a);
    /* the plan check is cheap: worker 0 only */
    if (worker == 0) {
        if (plan_text)
            tq_verify_plan(&v, a, plan_text, "plan");
        else if (*tq_artifact_plan(a))
            tq_verify_plan(&v, a, tq_artifact_plan(a), "plan recorded in the index");
    }
    for (int k = 0; k < ns; k++) {
        if (k % nworkers != worker) continue;
        uint64_t want = 0, fh = 0;
        int64_t nt = 0;
        const char* file = tq_artifact_shard_file(a, k, &want, &nt, &fh);
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, file);
        struct stat st;
        if (stat(path, &st) != 0) {
            const char* example = "";
            for (int64_t i = 0; i < tq_artifact_count(a); i++)
                if (tq_artifact_tensor_at(a, i)->shard == k) {
                    example = tq_artifact_tensor_at(a, i)->name;
                    break;
                }
            tq_vproblem(&v, tq_fail(TQ_ERR_NOTFOUND, "shard %s is missing (the index lists %lld tensors in it, e.g. %s)",
                                    path, (long long)nt, example));
            continue;
        }
        if ((uint64_t)st.st_size != want) {
            tq_vproblem(&v, tq_fail(TQ_ERR_CORRUPT, "shard %s is %lld bytes, the index records %llu: %s", path,
                                    (long long)st.st_size, (unsigned long long)want,
                                    (uint64_t)st.st_size < want ? "truncated" : "modified"));
            continue;
        }
        /* whole file first: one sequential read (which also warms the page cache for the tensor reads);
         * catches changes outside tensor data too (HDF5 metadata, attributes, slack). Reported after the
         * tensor checks so the first error names a tensor when one is damaged. */
        uint64_t got = 0;
        tq_status fr = fh ? tq_artifact_file_xxh3(path, &got) : TQ_OK;
        char fmsg[2048] = "";
        tq_status fbad = TQ_OK;
        if (fr != TQ_OK) {
            fbad = fr;
            snprintf(fmsg, sizeof fmsg, "%s", tq_last_error());
        } else if (fh && got != fh) {
            fbad = tq_fail(TQ_ERR_CORRUPT, "shard %s: file checksum mismatch (XXH3 %016llx, index records %016llx): "
                                    "the file was modified (outside the tensor data if no tensor error is reported)",
                                    path, (unsigned long long)got, (unsigned long long)fh);
            snprintf(fmsg, sizeof fmsg, "%s", tq_last_error());
        }
        report->shards_checked++;
        if (!tq_verify_shard_set(&v, a, k, path)) continue;
        int64_t count = 0;
        for (int64_t i = 0; i < tq_artifact_count(a); i++) {
            const tq_artifact_tensor* t = tq_artifact_tensor_at(a, i);
            if (t->shard != k) continue;
            count++;
            tq_qtensor q;
            tq_status r = tq_artifact_read(a, t, &q);
            if (r != TQ_OK) {
                tq_vproblem(&v, r);
                continue;
            }
            report->tensors_checked++;
            report->bytes_checked += t->bytes;
            tq_qtensor_release(&q);
        }
        if (count != nt)
            tq_vproblem(&v, tq_fail(TQ_ERR_FORMAT, "index: shard %s should hold %lld tensors, the tensor list puts %lld in it",
                                    path, (long long)nt, (long long)count));
        if (fbad != TQ_OK) tq_vproblem(&v, tq_fail(fbad, "%s", fmsg));
    }
    tq_artifact_close(&a);
    if (v.first != TQ_OK) tq_fail(v.first, "%s", v.first_msg);
    return v.first;
}
