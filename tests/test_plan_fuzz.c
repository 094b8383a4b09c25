/* test_plan_fuzz.c — fuzz targets for the two text formats of the allocator: the plan file
 * (tq_plan_parse) and the sensitivity table (tq_sens_table_parse). Each input must either parse (and
 * then its parsed form must format/parse again consistently) or fail cleanly with TQ_ERR_FORMAT and a
 * message. Under libFuzzer: clang -DTQ_FUZZING -fsanitize=fuzzer,address ... defines only
 * LLVMFuzzerTestOneInput (first byte selects the parser). Without TQ_FUZZING a replay main runs every
 * file in tests/golden/fuzz/plan/ (if any) plus 20,000 deterministic mutations of valid inputs. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocate.h"

static int n_bad = 0;

static void check_plan(const uint8_t* data, size_t size)
{
    tq_plan* p = NULL;
    tq_status rc = tq_plan_parse((const char*)data, size, "fuzz", &p);
    if (rc == TQ_OK) {
        /* every entry has a valid codec label and a non-empty name; names sorted and unique */
        for (int64_t i = 0; i < p->n; i++) {
            tq_codec c;
            if (!p->e[i].tensor[0] || tq_codec_label_parse(p->e[i].codec, &c) != TQ_OK) n_bad++;
            if (i > 0 && strcmp(p->e[i - 1].tensor, p->e[i].tensor) >= 0) n_bad++;
            if (tq_plan_codec(p, p->e[i].tensor) != p->e[i].codec) n_bad++;
        }
        char* text = NULL;
        size_t len = 0;
        if (tq_plan_format(p, &text, &len) == TQ_OK) {
            tq_plan* q = NULL;
            if (tq_plan_parse(text, len, "refmt", &q) != TQ_OK || q->n != p->n) n_bad++;
            tq_plan_free(&q);
        } else {
            n_bad++;
        }
        free(text);
    } else if (rc != TQ_ERR_FORMAT || !tq_last_error()[0]) {
        n_bad++;
    }
    tq_plan_free(&p);
}

static void check_table(const uint8_t* data, size_t size)
{
    tq_sens_table* t = NULL;
    tq_status rc = tq_sens_table_parse((const char*)data, size, "fuzz", &t);
    if (rc == TQ_OK) {
        for (int64_t i = 0; i < t->n; i++)
            if (t->rows[i].rows <= 0 || t->rows[i].cols <= 0 || !(t->rows[i].omega >= 0)) n_bad++;
    } else if ((rc != TQ_ERR_FORMAT && rc != TQ_ERR_NOMEM) || !tq_last_error()[0]) {
        n_bad++;
    }
    tq_sens_table_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size == 0) return 0;
    if (data[0] & 1) check_table(data + 1, size - 1);
    else check_plan(data + 1, size - 1);
    return 0;
}

#ifndef TQ_FUZZING
static const char* k_plan =
    "# tqpipe plan v1\n# budget 100 bytes\n"
    "model.layers.0.mlp.down_proj.weight tq3   # bytes=10 omega=1e-3 role=mlp_down\n"
    "model.layers.0.mlp.up_proj.weight   rtn4:g64\n"
    "\n"
    "model.norm.weight f32 # norm\n"
    "model.embed_tokens.weight\tint8\r\n";
static const char* k_table =
    "# tqpipe sensitivity table v1\n"
    "tensor\trole\trows\tcols\tcodec\tbytes\tomega\n"
    "model.layers.0.mlp.down_proj.weight\tmlp_down\t64\t172\ttq3\t4736\t1.234567890e-03\n"
    "model.norm.weight\tnorm\t1\t64\tf32\t256\t0.000000000e+00\n";

#define TQ_RAND_SEED 42ull
#include "tq_rand.h" /* defines: tq_rng, tq_rand_next */

static void mutate_and_check(const char* base, int table)
{
    size_t bl = strlen(base);
    uint8_t buf[4096];
    for (int it = 0; it < 10000; it++) {
        size_t len = bl;
        memcpy(buf + 1, base, bl);
        int nm = 1 + (int)(tq_rand_next() % 6);
        for (int k = 0; k < nm; k++) {
            size_t pos = len ? tq_rand_next() % len : 0;
            switch (tq_rand_next() % 5) {
            case 0: buf[1 + pos] = (uint8_t)tq_rand_next(); break;                                   /* flip byte */
            case 1: if (len) { memmove(buf + 1 + pos, buf + 2 + pos, len - pos - 1); len--; } break; /* delete */
            case 2: if (len + 2 < sizeof buf) { memmove(buf + 2 + pos, buf + 1 + pos, len - pos); buf[1 + pos] = "\t \n#:=g0"[tq_rand_next() % 8]; len++; } break;
            case 3: len = pos; break;                                                         /* truncate */
            default: if (len + 2 < sizeof buf) { memmove(buf + 2 + pos, buf + 1 + pos, len - pos); buf[1 + pos] = 0; len++; } break; /* NUL */
            }
        }
        buf[0] = (uint8_t)table;
        LLVMFuzzerTestOneInput(buf, len + 1);
    }
}

int main(void)
{
    /* valid inputs parse */
    tq_plan* p = NULL;
    if (tq_plan_parse(k_plan, strlen(k_plan), "k_plan", &p) != TQ_OK || p->n != 4 ||
        strcmp(tq_plan_codec(p, "model.layers.0.mlp.up_proj.weight"), "rtn4:g64") ||
        strcmp(tq_plan_codec(p, "model.embed_tokens.weight"), "int8")) {
        fprintf(stderr, "FAILED: valid plan rejected or misread: %s\n", tq_last_error());
        return EXIT_FAILURE;
    }
    tq_plan_free(&p);
    /* specific errors name the line */
    const char* bad[] = {"a tq3\nb tq3 extra\n", "a tq3\na rtn4\n", "a bogus7\n", "a\n"};
    const char* want[] = {"line 2", "twice", "line 1", "line 1"};
    for (int i = 0; i < 4; i++) {
        if (tq_plan_parse(bad[i], strlen(bad[i]), "plan.txt", &p) != TQ_ERR_FORMAT || !strstr(tq_last_error(), want[i])) {
            fprintf(stderr, "FAILED: bad plan %d: '%s'\n", i, tq_last_error());
            return EXIT_FAILURE;
        }
    }
    tq_sens_table* t = NULL;
    if (tq_sens_table_parse(k_table, strlen(k_table), "k_table", &t) != TQ_OK || t->n != 2) {
        fprintf(stderr, "FAILED: valid table rejected: %s\n", tq_last_error());
        return EXIT_FAILURE;
    }
    tq_sens_table_free(&t);
    /* replay corpus */
    int n_files = 0;
    const char* src = getenv("TQ_SOURCE_DIR");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/golden/fuzz/plan", src ? src : TQ_SOURCE_DIR);
    DIR* d = opendir(dir);
    if (d) {
        struct dirent* e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char f[8192];
            snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
            FILE* fp = fopen(f, "rb");
            if (!fp) continue;
            uint8_t buf[65536];
            size_t n = fread(buf, 1, sizeof buf, fp);
            fclose(fp);
            LLVMFuzzerTestOneInput(buf, n);
            n_files++;
        }
        closedir(d);
    }
    mutate_and_check(k_plan, 0);
    mutate_and_check(k_table, 1);
    printf("plan/table fuzz: %d corpus files + 20000 mutations, %d bad outcomes\n", n_files, n_bad);
    printf("%s\n", n_bad ? "FAILED" : "ok");
    return n_bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
#endif
