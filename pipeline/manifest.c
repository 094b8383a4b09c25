/* manifest.c — units list, compacted manifest and per-rank journals of a stage (format in manifest.h).
 * Text formats on purpose: a person can read them with `column -t`, and each journal line carries
 * its own checksum so a torn append after a SIGKILL or a full disk is recognised and ignored. */
#include "manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "fault.h"  /* defines: tq_fault_write_check */
#include "fileio.h" /* defines: tq_write_file_atomic, tq_read_file, tq_mkdirs, tq_pwrite_full */
#include "hash.h"   /* defines: tq_xxh64, tq_xxh_hex */
#include "log.h"
#include "stage_fmt.h" /* defines: tq_fmt */

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec * 1e-6;
}

// ------------------------------------------------------------------------------------------------
// units.tsv

tq_status tq_units_write(const char* stage_dir, int64_t n, const char* const* keys, const uint64_t* bytes)
{
    TQ_FORWARD(tq_mkdirs(stage_dir));
    size_t cap = 64, len = 0;
    for (int64_t i = 0; i < n; i++) cap += strlen(keys[i]) + 48;
    char* buf = malloc(cap);
    if (!buf) return tq_fail(TQ_ERR_NOMEM, "units list of %s: out of memory", stage_dir);
    len += (size_t)snprintf(buf + len, cap - len, "tqpipe-units %d\n%" PRId64 "\n", TQ_UNITS_VERSION, n);
    for (int64_t i = 0; i < n; i++) {
        if (strpbrk(keys[i], "\t\n")) {
            free(buf);
            return tq_fail(TQ_ERR_ARG, "unit key '%s' contains a tab or newline", keys[i]);
        }
        len += (size_t)snprintf(buf + len, cap - len, "%" PRId64 "\t%s\t%" PRIu64 "\n", i, keys[i],
                                bytes ? bytes[i] : 0);
    }
    char path[4200];
    tq_fmt(path, sizeof path, "%s/units.tsv", stage_dir);
    tq_status rc = tq_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// key hash table (open addressing, stored after the arrays)

typedef struct {
    int64_t cap;
    int64_t* slot; /* -1 empty, else unit index */
} keymap;

static keymap* keymap_build(char** keys, int64_t n)
{
    keymap* km = calloc(1, sizeof *km);
    if (!km) return NULL;
    km->cap = 16;
    while (km->cap < 2 * n + 16) km->cap <<= 1;
    km->slot = malloc((size_t)km->cap * sizeof(int64_t));
    if (!km->slot) {
        free(km);
        return NULL;
    }
    for (int64_t i = 0; i < km->cap; i++) km->slot[i] = -1;
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = tq_xxh64(keys[i], strlen(keys[i]), 0) & (uint64_t)(km->cap - 1);
        while (km->slot[h] >= 0) h = (h + 1) & (uint64_t)(km->cap - 1);
        km->slot[h] = i;
    }
    return km;
}

/* the keymap hangs off the manifest via a side table, keyed by pointer */
typedef struct {
    tq_manifest m;
    keymap* km;
} manifest_full;

int64_t tq_manifest_find(const tq_manifest* m, const char* key)
{
    const manifest_full* f = (const manifest_full*)m;
    if (!f->km) return -1;
    uint64_t h = tq_xxh64(key, strlen(key), 0) & (uint64_t)(f->km->cap - 1);
    while (f->km->slot[h] >= 0) {
        int64_t i = f->km->slot[h];
        if (!strcmp(m->keys[i], key)) return i;
        h = (h + 1) & (uint64_t)(f->km->cap - 1);
    }
    return -1;
}

void tq_manifest_free(tq_manifest** pm)
{
    if (!pm || !*pm) return;
    manifest_full* f = (manifest_full*)*pm;
    tq_manifest* m = &f->m;
    if (m->keys) {
        for (int64_t i = 0; i < m->n; i++) free(m->keys[i]);
        free(m->keys);
    }
    free(m->bytes);
    free(m->st);
    if (f->km) {
        free(f->km->slot);
        free(f->km);
    }
    free(f);
    *pm = NULL;
}

// ------------------------------------------------------------------------------------------------
// loading

static char* next_line(char** p)
{
    char* s = *p;
    if (!s || !*s) return NULL;
    char* nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *p = nl + 1;
    } else {
        *p = s + strlen(s);
    }
    return s;
}

static tq_status load_units(tq_manifest* m)
{
    char path[4200];
    tq_fmt(path, sizeof path, "%s/units.tsv", m->dir);
    if (!tq_file_exists(path)) return tq_fail(TQ_ERR_NOTFOUND, "%s: no unit list (the stage has not started)", path);
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    m->units_hash = tq_xxh64(text, len, 0);
    char* p = text;
    char* l = next_line(&p);
    int ver = 0;
    tq_status rc = TQ_OK;
    if (!l || sscanf(l, "tqpipe-units %d", &ver) != 1) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:1: not a tqpipe unit list (expected 'tqpipe-units 1'); remove the stage folder to restart it", path);
        goto out;
    }
    if (ver != TQ_UNITS_VERSION) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:1: unit list version %d, this tqpipe reads %d", path, ver, TQ_UNITS_VERSION);
        goto out;
    }
    l = next_line(&p);
    long long n = -1;
    if (!l || sscanf(l, "%lld", &n) != 1 || n < 0 || n > 100000000) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:2: bad unit count", path);
        goto out;
    }
    m->n = n;
    m->keys = calloc((size_t)n + 1, sizeof(char*));
    m->bytes = calloc((size_t)n + 1, sizeof(uint64_t));
    m->st = calloc((size_t)n + 1, sizeof(tq_unit_state));
    TQ_GOTO_FAIL(!m->keys || !m->bytes || !m->st, TQ_ERR_NOMEM, out, "%s: out of memory for %lld units", path, n);
    for (int64_t i = 0; i < n; i++) {
        l = next_line(&p);
        char* t1 = l ? strchr(l, '\t') : NULL;
        char* t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        TQ_GOTO_FAIL(!t2, TQ_ERR_FORMAT, out, "%s:%" PRId64 ": malformed unit line (truncated file?)", path, i + 3);
        *t1 = *t2 = '\0';
        char* end = NULL;
        long long idx = strtoll(l, &end, 10);
        TQ_GOTO_FAIL(*end || idx != i, TQ_ERR_FORMAT, out, "%s:%" PRId64 ": unit index %s, expected %" PRId64, path, i + 3, l, i);
        m->keys[i] = strdup(t1 + 1);
        TQ_GOTO_FAIL(!m->keys[i], TQ_ERR_NOMEM, out, "out of memory");
        m->bytes[i] = strtoull(t2 + 1, NULL, 10);
    }
out:
    free(text);
    return rc;
}

static int parse_hex64(const char* s, uint64_t* v)
{
    if (strlen(s) != 16) return -1;
    char* end = NULL;
    errno = 0;
    *v = strtoull(s, &end, 16);
    return (errno || *end) ? -1 : 0;
}

static tq_status load_compacted(tq_manifest* m)
{
    char path[4200];
    tq_fmt(path, sizeof path, "%s/manifest.tsv", m->dir);
    if (!tq_file_exists(path)) return TQ_OK;
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    tq_status rc = TQ_OK;
    char* p = text;
    int ver = 0, through = 0;
    char hx[32] = "";
    uint64_t uh = 0;
    char* l = next_line(&p);
    TQ_GOTO_FAIL(!l || sscanf(l, "tqpipe-manifest %d", &ver) != 1, TQ_ERR_FORMAT, out,
                 "%s:1: not a tqpipe manifest; remove it to rebuild from the journals", path);
    TQ_GOTO_FAIL(ver != TQ_MANIFEST_VERSION, TQ_ERR_FORMAT, out, "%s:1: manifest version %d, this tqpipe reads %d", path, ver,
                 TQ_MANIFEST_VERSION);
    l = next_line(&p);
    TQ_GOTO_FAIL(!l || sscanf(l, "units_hash %31s", hx) != 1 || parse_hex64(hx, &uh), TQ_ERR_FORMAT, out,
                 "%s:2: bad units_hash line", path);
    l = next_line(&p);
    TQ_GOTO_FAIL(!l || sscanf(l, "through_attempt %d", &through) != 1 || through < 0, TQ_ERR_FORMAT, out,
                 "%s:3: bad through_attempt line", path);
    if (uh != m->units_hash) {
        TQ_LOG(TQ_LOG_WARN, "%s belongs to another unit list (hash %s): ignored", path, hx);
        goto out;
    }
    m->through_attempt = through;
    if (through > m->max_attempt) m->max_attempt = through;
    int64_t lineno = 3;
    while ((l = next_line(&p))) {
        lineno++;
        if (!*l) continue;
        long long idx;
        int att;
        char seg[48], xh[32], ah[32];
        unsigned long long off, ln;
        double t;
        uint64_t xxh, aux;
        if (sscanf(l, "%lld\t%d\t%47s\t%llu\t%llu\t%31s\t%31s\t%lf", &idx, &att, seg, &off, &ln, xh, ah, &t) != 8 ||
            parse_hex64(xh, &xxh) || parse_hex64(ah, &aux) || idx < 0 || idx >= m->n) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%" PRId64 ": malformed manifest line", path, lineno);
            goto out;
        }
        tq_unit_state* s = &m->st[idx];
        s->done = 1;
        s->attempt = att;
        tq_fmt(s->seg, sizeof s->seg, "%s", seg);
        s->off = off;
        s->len = ln;
        s->xxh = xxh;
        s->aux = aux;
        s->time = t;
    }
out:
    free(text);
    return rc;
}

typedef struct {
    int attempt, rank;
    char name[64];
} jfile;

static int jfile_cmp(const void* a, const void* b)
{
    const jfile* x = a;
    const jfile* y = b;
    if (x->attempt != y->attempt) return x->attempt < y->attempt ? -1 : 1;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* journals in (attempt, rank) order; *n gets the count */
static tq_status list_journals(const char* dir, jfile** out, int* n)
{
    char jdir[4200];
    tq_fmt(jdir, sizeof jdir, "%s/journal", dir);
    *out = NULL;
    *n = 0;
    DIR* d = opendir(jdir);
    if (!d) return TQ_OK;
    int cap = 0;
    struct dirent* e;
    while ((e = readdir(d))) {
        int a, r, consumed = 0;
        if (sscanf(e->d_name, "a%d.r%d.jnl%n", &a, &r, &consumed) == 2 && consumed == (int)strlen(e->d_name)) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                jfile* nw = realloc(*out, (size_t)cap * sizeof(jfile));
                if (!nw) {
                    closedir(d);
                    return tq_fail(TQ_ERR_NOMEM, "out of memory listing %s", jdir);
                }
                *out = nw;
            }
            (*out)[*n].attempt = a;
            (*out)[*n].rank = r;
            tq_fmt((*out)[*n].name, sizeof(*out)[*n].name, "%s", e->d_name);
            (*n)++;
        }
    }
    closedir(d);
    if (*n) qsort(*out, (size_t)*n, sizeof(jfile), jfile_cmp);
    return TQ_OK;
}

static tq_status apply_journal(tq_manifest* m, const char* path, int attempt)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    char* p = text;
    char* l;
    const int ends_complete = len > 0 && text[len - 1] == '\n';
    while ((l = next_line(&p))) {
        /* a line without its newline is the torn tail of a killed append: ignore */
        if ((size_t)(p - text) == len && !ends_complete && (size_t)(l - text) + strlen(l) == len) {
            m->torn_lines++;
            break;
        }
        char* lastsp = strrchr(l, ' ');
        uint64_t cs;
        if (!lastsp || parse_hex64(lastsp + 1, &cs) || tq_xxh64(l, (size_t)(lastsp - l), 0) != cs) {
            m->torn_lines++;
            continue;
        }
        char kind;
        long long idx;
        char seg[48], xh[32], ah[32];
        unsigned long long off, ln;
        double t;
        if (sscanf(l, "%c %lld %47s %llu %llu %31s %31s %lf", &kind, &idx, seg, &off, &ln, xh, ah, &t) != 8 || idx < 0 ||
            idx >= m->n) {
            m->torn_lines++;
            continue;
        }
        tq_unit_state* s = &m->st[idx];
        if (kind == 'D') {
            uint64_t xxh, aux;
            if (parse_hex64(xh, &xxh) || parse_hex64(ah, &aux)) {
                m->torn_lines++;
                continue;
            }
            s->done = 1;
            s->attempt = attempt;
            tq_fmt(s->seg, sizeof s->seg, "%s", seg);
            s->off = off;
            s->len = ln;
            s->xxh = xxh;
            s->aux = aux;
            s->time = t;
        } else if (kind == 'B') {
            memset(s, 0, sizeof *s);
        }
    }
    free(text);
    return TQ_OK;
}

tq_status tq_manifest_load(const char* stage_dir, tq_manifest** out)
{
    *out = NULL;
    manifest_full* f = calloc(1, sizeof *f);
    if (!f) return tq_fail(TQ_ERR_NOMEM, "out of memory");
    tq_manifest* m = &f->m;
    tq_fmt(m->dir, sizeof m->dir, "%s", stage_dir);
    tq_status rc = load_units(m);
    if (rc != TQ_OK) goto fail;
    f->km = keymap_build(m->keys, m->n);
    TQ_GOTO_FAIL(!f->km, TQ_ERR_NOMEM, fail, "out of memory");
    TQ_CHECK_GOTO(load_compacted(m), fail);
    {
        jfile* js = NULL;
        int nj = 0;
        TQ_CHECK_GOTO(list_journals(stage_dir, &js, &nj), fail);
        for (int i = 0; i < nj; i++) {
            if (js[i].attempt > m->max_attempt) m->max_attempt = js[i].attempt;
            if (js[i].attempt <= m->through_attempt) continue;
            char path[4300];
            tq_fmt(path, sizeof path, "%s/journal/%s", stage_dir, js[i].name);
            rc = apply_journal(m, path, js[i].attempt);
            if (rc != TQ_OK) {
                free(js);
                goto fail;
            }
        }
        free(js);
    }
    m->n_done = 0;
    m->first_time = m->last_time = 0;
    for (int64_t i = 0; i < m->n; i++)
        if (m->st[i].done) {
            m->n_done++;
            if (m->first_time == 0 || m->st[i].time < m->first_time) m->first_time = m->st[i].time;
            if (m->st[i].time > m->last_time) m->last_time = m->st[i].time;
        }
    *out = m;
    return TQ_OK;
fail:
    tq_manifest_free(&m);
    return rc;
}

tq_status tq_manifest_compact(tq_manifest* m)
{
    size_t cap = 128 + (size_t)m->n_done * 160 + (size_t)m->n * 8, len = 0;
    char* buf = malloc(cap);
    if (!buf) return tq_fail(TQ_ERR_NOMEM, "out of memory compacting %s", m->dir);
    char uh[17];
    tq_xxh_hex(m->units_hash, uh);
    len += (size_t)snprintf(buf + len, cap - len, "tqpipe-manifest %d\nunits_hash %s\nthrough_attempt %d\n",
                            TQ_MANIFEST_VERSION, uh, m->max_attempt);
    for (int64_t i = 0; i < m->n; i++) {
        const tq_unit_state* s = &m->st[i];
        if (!s->done) continue;
        char xh[17], ah[17];
        tq_xxh_hex(s->xxh, xh);
        tq_xxh_hex(s->aux, ah);
        if (cap - len < 200) {
            cap *= 2;
            char* nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return tq_fail(TQ_ERR_NOMEM, "out of memory compacting %s", m->dir);
            }
            buf = nb;
        }
        len += (size_t)snprintf(buf + len, cap - len, "%" PRId64 "\t%d\t%s\t%" PRIu64 "\t%" PRIu64 "\t%s\t%s\t%.3f\n", i,
                                s->attempt, s->seg[0] ? s->seg : "-", s->off, s->len, xh, ah, s->time);
    }
    char path[4200];
    tq_fmt(path, sizeof path, "%s/manifest.tsv", m->dir);
    tq_status rc = tq_write_file_atomic(path, buf, len);
    free(buf);
    if (rc != TQ_OK) return rc;
    m->through_attempt = m->max_attempt;
    /* folded journals are now redundant */
    jfile* js = NULL;
    int nj = 0;
    TQ_FORWARD(list_journals(m->dir, &js, &nj));
    for (int i = 0; i < nj; i++)
        if (js[i].attempt <= m->through_attempt) {
            char jp[4300];
            tq_fmt(jp, sizeof jp, "%s/journal/%s", m->dir, js[i].name);
            unlink(jp);
        }
    free(js);
    return TQ_OK;
}

int tq_manifest_next_attempt(const char* stage_dir)
{
    int best = 0;
    char path[4200];
    tq_fmt(path, sizeof path, "%s/manifest.tsv", stage_dir);
    char* text = NULL;
    size_t len = 0;
    if (tq_file_exists(path) && tq_read_file(path, &text, &len) == TQ_OK) {
        const char* t = strstr(text, "through_attempt ");
        if (t) best = atoi(t + 16);
        free(text);
    }
    jfile* js = NULL;
    int nj = 0;
    if (list_journals(stage_dir, &js, &nj) == TQ_OK) {
        for (int i = 0; i < nj; i++)
            if (js[i].attempt > best) best = js[i].attempt;
        free(js);
    }
    /* segments too: a killed attempt may have written data before its first journal line */
    tq_fmt(path, sizeof path, "%s/seg", stage_dir);
    DIR* d = opendir(path);
    if (d) {
        struct dirent* e;
        while ((e = readdir(d))) {
            int a, r;
            if (sscanf(e->d_name, "a%d.r%d.seg", &a, &r) == 2 && a > best) best = a;
        }
        closedir(d);
    }
    return best + 1;
}

tq_status tq_manifest_read_unit(const tq_manifest* m, int64_t idx, void* buf, size_t cap)
{
    if (idx < 0 || idx >= m->n) return tq_fail(TQ_ERR_ARG, "unit %" PRId64 " out of range", idx);
    const tq_unit_state* s = &m->st[idx];
    if (!s->done) return tq_fail(TQ_ERR_ARG, "%s: unit %s is not done", m->dir, m->keys[idx]);
    if (s->len > cap) return tq_fail(TQ_ERR_ARG, "%s: unit %s needs %" PRIu64 " bytes", m->dir, m->keys[idx], s->len);
    char path[4300];
    tq_fmt(path, sizeof path, "%s/seg/%s", m->dir, s->seg);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return tq_fail(TQ_ERR_CORRUPT, "%s: output of unit %s is missing (segment %s deleted?): it will be redone",
                           m->dir, m->keys[idx], path);
        return tq_errno_status(errno, "open", path);
    }
    tq_status rc = tq_pread_full(fd, buf, (size_t)s->len, s->off, path);
    close(fd);
    if (rc == TQ_ERR_CORRUPT)
        return tq_fail(TQ_ERR_CORRUPT, "%s: output of unit %s is truncated in %s: it will be redone", m->dir, m->keys[idx],
                       path);
    TQ_FORWARD(rc);
    uint64_t h = tq_xxh64(buf, (size_t)s->len, 0);
    if (h != s->xxh) {
        char a[17], b[17];
        tq_xxh_hex(h, a);
        tq_xxh_hex(s->xxh, b);
        return tq_fail(TQ_ERR_CORRUPT, "%s: output of unit %s in %s at %" PRIu64 " has checksum %s, manifest says %s: it will be redone",
                       m->dir, m->keys[idx], path, s->off, a, b);
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// journal writer

tq_status tq_journal_open(tq_journal* j, const char* stage_dir, int attempt, int rank, int with_segment)
{
    memset(j, 0, sizeof *j);
    j->jfd = j->sfd = -1;
    const char* ns = getenv("TQ_MANIFEST_NOSYNC");
    j->nosync = ns && !strcmp(ns, "1");
    const char* e = getenv("TQ_JOURNAL_BATCH");
    j->max_units = e ? atoll(e) : 256;
    if (j->max_units < 1) j->max_units = 1;
    e = getenv("TQ_JOURNAL_INTERVAL");
    j->interval = e ? atof(e) : 1.0;
    j->max_bytes = (uint64_t)64 << 20;
    if (tq_fault_active()) j->max_units = 1;
    char d[4200];
    tq_fmt(d, sizeof d, "%s/journal", stage_dir);
    TQ_FORWARD(tq_mkdirs(d));
    tq_fmt(j->jpath, sizeof j->jpath, "%s/a%04d.r%04d.jnl", d, attempt, rank);
    j->jfd = open(j->jpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (j->jfd < 0) return tq_errno_status(errno, "create journal", j->jpath);
    if (with_segment) {
        tq_fmt(d, sizeof d, "%s/seg", stage_dir);
        TQ_FORWARD(tq_mkdirs(d));
        tq_fmt(j->segname, sizeof j->segname, "a%04d.r%04d.seg", attempt, rank);
        tq_fmt(j->spath, sizeof j->spath, "%s/%s", d, j->segname);
        j->sfd = open(j->spath, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (j->sfd < 0) {
            tq_status rc = tq_errno_status(errno, "create segment", j->spath);
            close(j->jfd);
            j->jfd = -1;
            return rc;
        }
        struct stat sb;
        if (fstat(j->sfd, &sb) == 0) j->seg_end = (uint64_t)sb.st_size;
    } else {
        strcpy(j->segname, "-");
    }
    j->batch_t0 = now_s();
    return TQ_OK;
}

/* drop the open batch (after a failed write): its units stay pending */
static void batch_drop(tq_journal* j, uint64_t seg_start)
{
    if (j->sfd >= 0 && j->seg_end > seg_start) {
        if (ftruncate(j->sfd, (off_t)seg_start) != 0) TQ_LOG(TQ_LOG_WARN, "cannot truncate %s", j->spath);
        j->seg_end = seg_start;
    }
    j->buf_len = 0;
    j->batch_units = j->batch_done = 0;
    j->batch_bytes = 0;
}

tq_status tq_journal_commit(tq_journal* j)
{
    if (j->batch_units == 0) return TQ_OK;
    uint64_t seg_start = j->seg_end - j->batch_bytes;
    tq_status rc = TQ_OK;
    if (j->batch_bytes > 0 && !j->nosync && fdatasync(j->sfd) != 0) rc = tq_errno_status(errno, "fdatasync", j->spath);
    if (rc == TQ_OK) rc = tq_fault_write_check(j->jpath);
    if (rc == TQ_OK) rc = tq_write_full(j->jfd, j->buf, j->buf_len, j->jpath);
    if (rc == TQ_OK && !j->nosync && fdatasync(j->jfd) != 0) rc = tq_errno_status(errno, "fdatasync", j->jpath);
    if (rc != TQ_OK) {
        batch_drop(j, seg_start);
        return rc;
    }
    j->records += j->batch_units;
    j->committed += j->batch_done;
    j->buf_len = 0;
    j->batch_units = j->batch_done = 0;
    j->batch_bytes = 0;
    j->batch_t0 = now_s();
    return TQ_OK;
}

static tq_status append_line(tq_journal* j, char kind, int64_t idx, const char* seg, uint64_t off, uint64_t len,
                             uint64_t xxh, uint64_t aux)
{
    char line[256];
    char xh[17], ah[17], cs[17];
    tq_xxh_hex(xxh, xh);
    tq_xxh_hex(aux, ah);
    int n = tq_fmt(line, sizeof line, "%c %" PRId64 " %s %" PRIu64 " %" PRIu64 " %s %s %.3f", kind, idx, seg, off, len, xh,
                   ah, now_s());
    if (n < 0) return tq_fail(TQ_ERR_ARG, "journal line too long");
    tq_xxh_hex(tq_xxh64(line, (size_t)n, 0), cs);
    int m = tq_fmt(line + n, sizeof line - (size_t)n, " %s\n", cs);
    if (m < 0) return tq_fail(TQ_ERR_ARG, "journal line too long");
    n += m;
    if (j->buf_len + (size_t)n > j->buf_cap) {
        size_t cap = j->buf_cap ? j->buf_cap * 2 : 65536;
        while (cap < j->buf_len + (size_t)n) cap *= 2;
        char* nb = realloc(j->buf, cap);
        if (!nb) return tq_fail(TQ_ERR_NOMEM, "out of memory for the journal batch of %s", j->jpath);
        j->buf = nb;
        j->buf_cap = cap;
    }
    memcpy(j->buf + j->buf_len, line, (size_t)n);
    j->buf_len += (size_t)n;
    j->batch_units++;
    if (kind == 'D') j->batch_done++;
    return TQ_OK;
}

tq_status tq_journal_put(tq_journal* j, int64_t idx, const void* data, size_t len, const uint64_t* xxh, uint64_t aux)
{
    uint64_t h = xxh ? *xxh : tq_xxh64(data, len, 0);
    uint64_t off = 0;
    if (len > 0) {
        if (j->sfd < 0) return tq_fail(TQ_ERR_ARG, "%s: journal opened without a segment", j->jpath);
        off = j->seg_end;
        tq_status rc = tq_fault_write_check(j->spath);
        if (rc == TQ_OK) rc = tq_pwrite_full(j->sfd, data, len, off, j->spath);
        if (rc != TQ_OK) {
            /* drop the partial record and the open batch so the segment ends clean */
            j->seg_end = off + len;
            j->batch_bytes += len;
            batch_drop(j, off + len - j->batch_bytes);
            return rc;
        }
        j->seg_end = off + len;
        j->batch_bytes += len;
    }
    TQ_FORWARD(append_line(j, 'D', idx, len > 0 ? j->segname : "-", off, len, h, aux));
    if (j->batch_units >= j->max_units || j->batch_bytes >= j->max_bytes || now_s() - j->batch_t0 >= j->interval)
        return tq_journal_commit(j);
    return TQ_OK;
}

tq_status tq_journal_put_batch(tq_journal* j, int64_t n, const int64_t* idx, const void* data, const size_t* lens,
                               const uint64_t* xxh, const uint64_t* aux)
{
    if (n <= 0) return TQ_OK;
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) total += lens[i];
    uint64_t off = j->seg_end;
    if (total > 0) {
        if (j->sfd < 0) return tq_fail(TQ_ERR_ARG, "%s: journal opened without a segment", j->jpath);
        tq_status rc = tq_fault_write_check(j->spath);
        if (rc == TQ_OK) rc = tq_pwrite_full(j->sfd, data, total, off, j->spath);
        if (rc != TQ_OK) {
            j->seg_end = off + total;
            j->batch_bytes += total;
            batch_drop(j, off + total - j->batch_bytes);
            return rc;
        }
        j->seg_end = off + total;
        j->batch_bytes += total;
    }
    const uint8_t* p = data;
    for (int64_t i = 0; i < n; i++) {
        uint64_t h = xxh ? xxh[i] : tq_xxh64(p, lens[i], 0);
        tq_status rc = append_line(j, 'D', idx[i], lens[i] > 0 ? j->segname : "-", lens[i] > 0 ? off : 0, lens[i], h,
                                   aux ? aux[i] : 0);
        if (rc != TQ_OK) {
            batch_drop(j, j->seg_end - j->batch_bytes);
            return rc;
        }
        off += lens[i];
        p += lens[i];
    }
    return tq_journal_commit(j);
}

tq_status tq_journal_bad(tq_journal* j, int64_t idx)
{
    TQ_FORWARD(append_line(j, 'B', idx, "-", 0, 0, 0, 0));
    return tq_journal_commit(j);
}

tq_status tq_journal_close(tq_journal* j)
{
    tq_status rc = TQ_OK;
    if (j->jfd >= 0) rc = tq_journal_commit(j);
    if (j->jfd >= 0) close(j->jfd);
    if (j->sfd >= 0) close(j->sfd);
    j->jfd = j->sfd = -1;
    free(j->buf);
    j->buf = NULL;
    j->buf_len = j->buf_cap = 0;
    return rc;
}
