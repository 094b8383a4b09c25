/* test_tokenizer.c — the llama2.c tokenizer (pipeline/tokenizer.h) on the bundled tok512.bin:
 * encode/decode round trip of every story of the TinyStories slice (text -> ids -> the bytes llama2.c
 * would print == the stripped text), byte fallback for characters outside the vocabulary, BOS / dummy
 * prefix / EOS handling, merges actually happen, and a truncated file is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "tokenizer.h"

#include "tq_check.h"

/* decode ids[1..n) as llama2.c prints them (after BOS at ids[0]) into out */
static size_t decode_all(const tq_tokenizer* t, const int* ids, int n, char* out)
{
    size_t o = 0;
    for (int i = 1; i < n; i++) {
        size_t len;
        const char* p = tq_tokenizer_decode(t, ids[i - 1], ids[i], &len);
        memcpy(out + o, p, len);
        o += len;
    }
    out[o] = 0;
    return o;
}

static int roundtrip(const tq_tokenizer* t, const char* text, int* n_out)
{
    size_t tl = strlen(text);
    int* ids = malloc((tl + 3) * sizeof(int));
    char* back = malloc(tl * 4 + 16);
    int n = 0;
    int ok = tq_tokenizer_encode(t, text, 1, 0, ids, &n) == TQ_OK;
    ok = ok && n >= 1 && ids[0] == 1;
    if (ok) {
        decode_all(t, ids, n, back);
        ok = !strcmp(back, text);
        if (!ok) printf("  text: [%.80s]\n  back: [%.80s]\n", text, back);
    }
    if (n_out) *n_out = n;
    free(ids);
    free(back);
    return ok;
}

int main(void)
{
    const char* src = getenv("TQ_SOURCE_DIR");
    char tokp[4096], datap[4096];
    snprintf(tokp, sizeof tokp, "%s/jobs/models/tok512.bin", src ? src : TQ_SOURCE_DIR);
    snprintf(datap, sizeof datap, "%s/jobs/data/tinystories_valid.txt", src ? src : TQ_SOURCE_DIR);
    tq_tokenizer* t = NULL;
    if (tq_tokenizer_load(tokp, 512, &t) != TQ_OK) {
        printf("FAILED load %s: %s\n", tokp, tq_last_error());
        return EXIT_FAILURE;
    }
    CHECK(tq_tokenizer_vocab(t) == 512, "vocab %d", tq_tokenizer_vocab(t));

    /* fixed behaviour */
    int ids[64], n = 0;
    tq_tokenizer_encode(t, "", 1, 0, ids, &n);
    CHECK(n == 1 && ids[0] == 1, "empty text -> [BOS], got %d tokens", n);
    tq_tokenizer_encode(t, "", 1, 1, ids, &n);
    CHECK(n == 2 && ids[1] == 2, "empty text with eos -> [BOS, EOS]");
    tq_tokenizer_encode(t, "Once upon a time", 0, 0, ids, &n);
    CHECK(n > 0 && n < 16, "merges: 'Once upon a time' gave %d tokens (16 characters + prefix without merges)", n);
    size_t len;
    const char* p = tq_tokenizer_decode(t, 1, ids[0], &len);
    CHECK(len > 0 && p[0] != ' ', "leading space dropped after BOS");
    /* byte fallback: U+65E5 is not a piece of this 512-token vocabulary -> its 3 bytes + 3 */
    tq_tokenizer_encode(t, "\xe6\x97\xa5", 0, 0, ids, &n);
    CHECK(n == 4 && ids[1] == 0xe6 + 3 && ids[2] == 0x97 + 3 && ids[3] == 0xa5 + 3, "byte fallback for U+65E5 (%d tokens)", n);
    /* a code point that is a piece (U+00E9 is id 485 in tok512) is one token */
    tq_tokenizer_encode(t, "\xc3\xa9", 0, 0, ids, &n);
    CHECK(n == 2 && ids[1] == 485, "U+00E9 -> id 485");
    p = tq_tokenizer_decode(t, 5, 0xe6 + 3, &len);
    CHECK(len == 1 && (unsigned char)p[0] == 0xe6, "<0xE6> decodes to the raw byte");
    CHECK(!tq_tokenizer_printable("\x01", 1) && tq_tokenizer_printable("\n", 1) && tq_tokenizer_printable("ab", 2),
          "safe_printf rule");
    CHECK(roundtrip(t, "Caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac, tabs\tand\nnewlines!", NULL), "UTF-8 round trip");

    /* every story of the TinyStories slice round-trips */
    char* buf = NULL;
    size_t blen = 0;
    if (tq_read_file(datap, &buf, &blen) != TQ_OK) {
        printf("FAILED read %s\n", datap);
        return EXIT_FAILURE;
    }
    int stories = 0, bad = 0;
    long long toks = 0, chars = 0;
    char* s = buf;
    for (;;) {
        char* sep = strstr(s, "<|endoftext|>");
        if (sep) *sep = 0;
        while (*s == '\n' || *s == ' ') s++;
        size_t sl = strlen(s);
        while (sl > 0 && (s[sl - 1] == '\n' || s[sl - 1] == ' ')) s[--sl] = 0;
        if (sl) {
            int k = 0;
            if (!roundtrip(t, s, &k)) bad++;
            stories++;
            toks += k;
            chars += (long long)sl;
        }
        if (!sep) break;
        s = sep + 13;
    }
    CHECK(stories > 50 && bad == 0, "%d of %d stories failed the round trip", bad, stories);
    printf("ok   %d stories, %lld chars -> %lld tokens (%.2f chars/token), round trip exact\n", stories, chars, toks,
           (double)chars / (double)toks);
    free(buf);
    tq_tokenizer_free(&t);

    /* a truncated file is refused */
    char tmp[] = "/tmp/tq_tok_trunc_XXXXXX";
    int fd = mkstemp(tmp);
    char* whole = NULL;
    size_t wl = 0;
    if (fd >= 0 && tq_read_file(tokp, &whole, &wl) == TQ_OK) {
        tq_write_full(fd, whole, wl / 2, tmp);
        close(fd);
        CHECK(tq_tokenizer_load(tmp, 512, &t) == TQ_ERR_CORRUPT, "truncated tokenizer must be TQ_ERR_CORRUPT");
        tq_tokenizer_free(&t);
        unlink(tmp);
    }
    free(whole);
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
