/* tokenizer.c — llama2.c tokenizer: loading tokenizer.bin, BPE encode by merge scores with byte
 * fallback, and decode to the bytes llama2.c prints. See tokenizer.h for the file format. */
#include "tokenizer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tq_tokenizer {
    int vocab;
    int max_len;
    char** pieces;      /* NUL-terminated */
    size_t* lens;
    float* scores;
    int* sorted;        /* ids sorted by piece bytes, for lookup */
    unsigned char bytes[256][2];
};

static const tq_tokenizer* g_sort_tok; /* qsort context (load is not reentrant; see tq_tokenizer_load) */

static int cmp_piece(const char* a, size_t la, const char* b, size_t lb)
{
    size_t m = la < lb ? la : lb;
    int c = memcmp(a, b, m);
    if (c) return c;
    return la < lb ? -1 : la > lb ? 1 : 0;
}

static int cmp_ids(const void* pa, const void* pb)
{
    int a = *(const int*)pa, b = *(const int*)pb;
    int c = cmp_piece(g_sort_tok->pieces[a], g_sort_tok->lens[a], g_sort_tok->pieces[b], g_sort_tok->lens[b]);
    return c ? c : (a < b ? -1 : a > b);
}

/* First id (lowest in sort order) whose piece equals s, or -1. */
static int lookup(const tq_tokenizer* t, const char* s, size_t len)
{
    int lo = 0, hi = t->vocab - 1, found = -1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int id = t->sorted[mid];
        int c = cmp_piece(s, len, t->pieces[id], t->lens[id]);
        if (c == 0) {
            found = id;
            hi = mid - 1;
        } else if (c < 0) {
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    return found;
}

tq_status tq_tokenizer_load(const char* path, int vocab_size, tq_tokenizer** out)
{
    *out = NULL;
    FILE* f = fopen(path, "rb");
    if (!f) return tq_fail(TQ_ERR_NOTFOUND, "cannot open tokenizer %s: check the path", path);
    tq_tokenizer* t = calloc(1, sizeof *t);
    tq_status rc = TQ_OK;
    int cap = vocab_size > 0 ? vocab_size : 1024;
    TQ_GOTO_FAIL(!t, TQ_ERR_NOMEM, fail, "out of memory loading tokenizer %s", path);
    t->pieces = calloc((size_t)cap, sizeof(char*));
    t->lens = calloc((size_t)cap, sizeof(size_t));
    t->scores = calloc((size_t)cap, sizeof(float));
    TQ_GOTO_FAIL(!t->pieces || !t->lens || !t->scores, TQ_ERR_NOMEM, fail, "out of memory loading tokenizer %s", path);
    int32_t maxlen;
    TQ_GOTO_FAIL(fread(&maxlen, 4, 1, f) != 1 || maxlen <= 0 || maxlen > 65536, TQ_ERR_FORMAT, fail,
                 "tokenizer %s: bad header (max_token_length); is this a llama2.c tokenizer.bin?", path);
    t->max_len = maxlen;
    for (int i = 0;; i++) {
        if (vocab_size > 0 && i == vocab_size) break;
        float score;
        int32_t len;
        size_t got = fread(&score, 4, 1, f);
        if (got != 1) {
            TQ_GOTO_FAIL(vocab_size > 0, TQ_ERR_CORRUPT, fail,
                         "tokenizer %s: truncated at entry %d of %d (wrong vocab size or damaged file)", path, i,
                         vocab_size);
            break;
        }
        TQ_GOTO_FAIL(fread(&len, 4, 1, f) != 1 || len < 0 || len > maxlen, TQ_ERR_CORRUPT, fail,
                     "tokenizer %s: entry %d has a bad length (max_token_length %d)", path, i, maxlen);
        if (i == cap) {
            cap *= 2;
            char** np = realloc(t->pieces, (size_t)cap * sizeof(char*));
            if (np) t->pieces = np;
            size_t* nl = realloc(t->lens, (size_t)cap * sizeof(size_t));
            if (nl) t->lens = nl;
            float* ns = realloc(t->scores, (size_t)cap * sizeof(float));
            if (ns) t->scores = ns;
            TQ_GOTO_FAIL(!np || !nl || !ns, TQ_ERR_NOMEM, fail, "out of memory loading tokenizer %s", path);
        }
        t->pieces[i] = malloc((size_t)len + 1);
        TQ_GOTO_FAIL(!t->pieces[i], TQ_ERR_NOMEM, fail, "out of memory loading tokenizer %s", path);
        t->vocab = i + 1;
        TQ_GOTO_FAIL(len > 0 && fread(t->pieces[i], (size_t)len, 1, f) != 1, TQ_ERR_CORRUPT, fail,
                     "tokenizer %s: entry %d truncated", path, i);
        t->pieces[i][len] = 0;
        t->lens[i] = (size_t)len;
        t->scores[i] = score;
    }
    TQ_GOTO_FAIL(t->vocab < 3, TQ_ERR_FORMAT, fail, "tokenizer %s: only %d entries", path, t->vocab);
    t->sorted = malloc((size_t)t->vocab * sizeof(int));
    TQ_GOTO_FAIL(!t->sorted, TQ_ERR_NOMEM, fail, "out of memory loading tokenizer %s", path);
    for (int i = 0; i < t->vocab; i++) t->sorted[i] = i;
    g_sort_tok = t;
    qsort(t->sorted, (size_t)t->vocab, sizeof(int), cmp_ids);
    g_sort_tok = NULL;
    for (int i = 0; i < 256; i++) {
        t->bytes[i][0] = (unsigned char)i;
        t->bytes[i][1] = 0;
    }
    fclose(f);
    *out = t;
    return TQ_OK;
fail:
    fclose(f);
    tq_tokenizer_free(&t);
    return rc;
}

void tq_tokenizer_free(tq_tokenizer** pt)
{
    if (!pt || !*pt) return;
    tq_tokenizer* t = *pt;
    if (t->pieces)
        for (int i = 0; i < t->vocab; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->lens);
    free(t->scores);
    free(t->sorted);
    free(t);
    *pt = NULL;
}

int tq_tokenizer_vocab(const tq_tokenizer* t)
{
    return t->vocab;
}

/* id of the piece a+b, or -1 (buf: scratch of 2 * max_len bytes) */
static int merge_id(const tq_tokenizer* t, int a, int b, char* buf)
{
    size_t la = t->lens[a], lb = t->lens[b];
    if (la + lb > (size_t)t->max_len * 2) return -1;
    memcpy(buf, t->pieces[a], la);
    memcpy(buf + la, t->pieces[b], lb);
    return lookup(t, buf, la + lb);
}

tq_status tq_tokenizer_encode(const tq_tokenizer* t, const char* text, int bos, int eos, int* tokens, int* n)
{
    TQ_RETURN_IF(!text, TQ_ERR_ARG, "tokenizer: NULL text");
    size_t tl = strlen(text);
    char* buf = malloc((size_t)t->max_len * 2 + 3);
    TQ_RETURN_IF(!buf, TQ_ERR_NOMEM, "tokenizer: out of memory");
    int nt = 0;
    if (bos) tokens[nt++] = 1;
    if (tl > 0) {
        int sp = lookup(t, " ", 1);
        if (sp >= 0) tokens[nt++] = sp;
    }
    /* one token per UTF-8 code point, or its bytes (+3) when the code point is not a piece */
    size_t blen = 0;
    for (const char* c = text; *c; c++) {
        if ((*c & 0xC0) != 0x80) blen = 0;
        buf[blen++] = *c;
        buf[blen] = 0;
        if ((*(c + 1) & 0xC0) == 0x80 && blen < 4) continue;
        int id = lookup(t, buf, blen);
        if (id >= 0) {
            tokens[nt++] = id;
        } else {
            for (size_t i = 0; i < blen; i++) tokens[nt++] = (unsigned char)buf[i] + 3;
        }
        blen = 0;
    }
    /* merge the best-scoring adjacent pair until none merges (ties: the leftmost pair, as run.c). The
     * merge result of each adjacent pair is cached and only the two pairs touching a merge are redone. */
    int* pair = malloc((size_t)(nt > 0 ? nt : 1) * sizeof(int)); /* id of tokens[i]+tokens[i+1] or -1 */
    if (!pair) {
        free(buf);
        return tq_fail(TQ_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int i = 0; i < nt; i++) pair[i] = i < nt - 1 ? merge_id(t, tokens[i], tokens[i + 1], buf) : -1;
    for (;;) {
        float best = -1e10f;
        int best_idx = -1;
        for (int i = 0; i < nt - 1; i++)
            if (pair[i] >= 0 && t->scores[pair[i]] > best) {
                best = t->scores[pair[i]];
                best_idx = i;
            }
        if (best_idx < 0) break;
        tokens[best_idx] = pair[best_idx];
        for (int i = best_idx + 1; i < nt - 1; i++) {
            tokens[i] = tokens[i + 1];
            pair[i] = pair[i + 1];
        }
        nt--;
        if (best_idx > 0) pair[best_idx - 1] = merge_id(t, tokens[best_idx - 1], tokens[best_idx], buf);
        if (best_idx < nt - 1) pair[best_idx] = merge_id(t, tokens[best_idx], tokens[best_idx + 1], buf);
    }
    free(pair);
    if (eos) tokens[nt++] = 2;
    free(buf);
    *n = nt;
    return TQ_OK;
}

const char* tq_tokenizer_decode(const tq_tokenizer* t, int prev, int token, size_t* len)
{
    if (token < 0 || token >= t->vocab) {
        *len = 0;
        return "";
    }
    const char* p = t->pieces[token];
    size_t l = t->lens[token];
    if (prev == 1 && l > 0 && p[0] == ' ') {
        p++;
        l--;
    }
    unsigned int byte;
    char tail;
    if (l == 6 && sscanf(p, "<0x%02X>%c", &byte, &tail) == 1 && p[5] == '>') {
        *len = 1;
        return (const char*)t->bytes[byte & 0xff];
    }
    *len = l;
    return p;
}

int tq_tokenizer_printable(const char* piece, size_t len)
{
    if (len == 0) return 0;
    if (len == 1) {
        unsigned char b = (unsigned char)piece[0];
        if (!(isprint(b) || isspace(b))) return 0;
    }
    return 1;
}
