/* test_alloc.c — the allocator (pipeline/allocate.h):
 *  1. tq_mckp_solve against brute force on random small instances (many seeds; Pareto, convex and
 *     arbitrary option sets; tight and loose budgets): same optimum, bytes <= budget, proven optimal,
 *     LP lower bound <= optimum.
 *  2. A large instance (2000 tensors x 9 codecs): budget met, gap to the Lagrangian bound reported.
 *  3. tq_allocate over a sensitivity table: every tensor counted, rules by role and glob, allowed
 *     codecs, budget in bpw and bytes, infeasible budget message; plan write -> parse round trip;
 *     table format -> parse round trip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocate.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

#define TQ_RAND_SEED 0ull /* every test seeds tq_rng itself */
#include "tq_rand.h" /* defines: tq_rng, tq_rand_next, tq_rand_unit */

/* exhaustive optimum; returns INFINITY when infeasible */
static double brute(const tq_mckp* p, uint64_t budget, int64_t i, uint64_t bytes, double w)
{
    if (i == p->n) return w;
    double best = INFINITY;
    for (int64_t k = p->start[i]; k < p->start[i + 1]; k++) {
        if (bytes + p->bytes[k] > budget) continue;
        double v = brute(p, budget, i + 1, bytes + p->bytes[k], w + p->omega[k]);
        if (v < best) best = v;
    }
    return best;
}

static void test_bruteforce(void)
{
    int n_inst = 0, n_exact = 0, n_full = 0;
    double worst_gap = 0;
    for (int seed = 1; seed <= 1500; seed++) {
        tq_rng = 0x9E3779B97F4A7C15ull * (uint64_t)seed + 1;
        int64_t n = 1 + (int64_t)(tq_rand_next() % 8);
        int64_t start[16], nopt = 0;
        uint64_t bytes[128];
        double omega[128];
        int kind = seed % 3; /* 0: codec-like (monotone), 1: arbitrary, 2: with duplicates/dominated */
        for (int64_t i = 0; i < n; i++) {
            start[i] = nopt;
            int m = 1 + (int)(tq_rand_next() % 5);
            uint64_t base = 100 + tq_rand_next() % 400;
            double w0 = tq_rand_unit() * 10;
            for (int k = 0; k < m; k++) {
                if (kind == 0) {
                    bytes[nopt] = base * (uint64_t)(k + 1) + tq_rand_next() % 50;
                    omega[nopt] = w0 * pow(0.25, k) * (0.5 + tq_rand_unit());
                } else if (kind == 1) {
                    bytes[nopt] = 10 + tq_rand_next() % 1000;
                    omega[nopt] = tq_rand_unit() * 5;
                } else {
                    bytes[nopt] = 16 * (1 + tq_rand_next() % 20);
                    omega[nopt] = (double)(tq_rand_next() % 6);
                }
                nopt++;
            }
        }
        start[n] = nopt;
        tq_mckp p = {n, start, bytes, omega};
        uint64_t minb = 0, maxb = 0;
        for (int64_t i = 0; i < n; i++) {
            uint64_t lo = UINT64_MAX, hi = 0;
            for (int64_t k = start[i]; k < start[i + 1]; k++) {
                if (bytes[k] < lo) lo = bytes[k];
                if (bytes[k] > hi) hi = bytes[k];
            }
            minb += lo;
            maxb += hi;
        }
        uint64_t budget = minb + (uint64_t)(tq_rand_unit() * (double)(maxb - minb + 1));
        if (seed % 10 == 0) budget = minb;      /* tight */
        if (seed % 10 == 1 && minb > 0) budget = minb - 1; /* infeasible */
        int64_t choice[16];
        tq_mckp_result res;
        tq_mckp_opts o = {0, 0};
        if (seed % 4 == 0) o.core = 2; /* small core: still feasible and never worse than greedy */
        tq_status rc = tq_mckp_solve(&p, budget, &o, choice, &res);
        double opt = brute(&p, budget, 0, 0, 0);
        if (isinf(opt)) {
            CHECK(rc == TQ_ERR_ARG, "seed %d: infeasible accepted", seed);
            CHECK(strstr(tq_last_error(), "smallest possible") != NULL, "message: %s", tq_last_error());
            continue;
        }
        n_inst++;
        CHECK(rc == TQ_OK, "seed %d: %s", seed, tq_last_error());
        if (rc != TQ_OK) continue;
        uint64_t by = 0;
        double w = 0;
        for (int64_t i = 0; i < n; i++) {
            CHECK(choice[i] >= start[i] && choice[i] < start[i + 1], "seed %d: choice out of range", seed);
            by += bytes[choice[i]];
            w += omega[choice[i]];
        }
        CHECK(by <= budget, "seed %d: %llu bytes > budget %llu", seed, (unsigned long long)by,
              (unsigned long long)budget);
        CHECK(by == res.bytes && fabs(w - res.omega) <= 1e-12 * fmax(1, w), "seed %d: result totals wrong", seed);
        CHECK(res.lower_bound <= opt + 1e-9 * fmax(1, opt), "seed %d: bound %.17g above optimum %.17g", seed,
              res.lower_bound, opt);
        if (o.core == 0) {
            n_full++;
            CHECK(fabs(w - opt) <= 1e-9 * fmax(1, opt), "seed %d (n %lld): omega %.17g, optimum %.17g", seed,
                  (long long)n, w, opt);
            CHECK(res.proven_optimal, "seed %d: not proven optimal", seed);
            if (fabs(w - opt) <= 1e-9 * fmax(1, opt)) n_exact++;
        } else {
            CHECK(w <= res.greedy_omega + 1e-12, "seed %d: worse than greedy", seed);
            if (res.proven_optimal)
                CHECK(fabs(w - opt) <= 1e-9 * fmax(1, opt), "seed %d: claimed optimal, omega %.17g vs %.17g", seed, w,
                      opt);
        }
        if (opt > 0 && (opt - res.lower_bound) / opt > worst_gap) worst_gap = (opt - res.lower_bound) / opt;
    }
    printf("brute force: %d feasible instances; %d of %d solved with the full core match the brute-force optimum\n",
           n_inst, n_exact, n_full);
    printf("brute force: worst relative gap between the LP bound and the true optimum %.4f\n", worst_gap);
}

static void test_large(void)
{
    /* 2000 tensors, 9 codec-like options each, omega ~ s · 4^-bits with per-tensor sensitivity */
    const int64_t n = 2000, m = 9;
    int64_t* start = malloc((size_t)(n + 1) * sizeof(int64_t));
    uint64_t* bytes = malloc((size_t)(n * m) * sizeof(uint64_t));
    double* omega = malloc((size_t)(n * m) * sizeof(double));
    int64_t* choice = malloc((size_t)n * sizeof(int64_t));
    const double bpw[9] = {1.125, 2.125, 2.25, 3.125, 3.25, 4.125, 4.25, 8.25, 16.0};
    tq_rng = 12345;
    uint64_t total_w = 0;
    for (int64_t i = 0; i < n; i++) {
        start[i] = i * m;
        uint64_t wts = 4096ull * (64 + tq_rand_next() % 4096);
        total_w += wts;
        double s = exp(4 * tq_rand_unit());
        for (int64_t k = 0; k < m; k++) {
            bytes[i * m + k] = (uint64_t)(bpw[k] * (double)wts / 8.0) + 256;
            double b = floor(bpw[k]);
            omega[i * m + k] = k == m - 1 ? 0 : s * (double)wts * pow(4.0, -b) * (0.8 + 0.4 * tq_rand_unit());
        }
    }
    start[n] = n * m;
    tq_mckp p = {n, start, bytes, omega};
    double targets[3] = {2.0, 2.5, 3.0};
    for (int t = 0; t < 3; t++) {
        uint64_t budget = (uint64_t)(targets[t] * (double)total_w / 8.0);
        tq_mckp_result res;
        tq_mckp_opts o = {0, 0};
        CHECK(tq_mckp_solve(&p, budget, &o, choice, &res) == TQ_OK, "large: %s", tq_last_error());
        CHECK(res.bytes <= budget, "large: over budget");
        double gap = (res.omega - res.lower_bound) / res.omega;
        printf("large (2000 tensors x 9 codecs) at %.1f bpw: omega %.6e, bound %.6e, gap %.2e (relative), "
               "greedy gap %.2e, slack %llu bytes, nodes %lld\n",
               targets[t], res.omega, res.lower_bound, gap, (res.greedy_omega - res.lower_bound) / res.omega,
               (unsigned long long)(budget - res.bytes), (long long)res.nodes);
        CHECK(gap < 1e-3, "large: gap %.3e", gap);
        CHECK(res.omega <= res.greedy_omega, "large: worse than greedy");
    }
    free(start);
    free(bytes);
    free(omega);
    free(choice);
}

static void add(tq_sens_table* t, const char* tensor, const char* role, int64_t r, int64_t c, const char* codec,
                double omega)
{
    tq_sens_row row;
    memset(&row, 0, sizeof row);
    snprintf(row.tensor, sizeof row.tensor, "%s", tensor);
    snprintf(row.role, sizeof row.role, "%s", role);
    snprintf(row.codec, sizeof row.codec, "%s", codec);
    row.rows = r;
    row.cols = c;
    tq_codec cc;
    if (tq_codec_label_parse(codec, &cc) != TQ_OK) {
        n_failed++;
        fprintf(stderr, "FAILED: codec %s: %s\n", codec, tq_last_error());
        return;
    }
    row.bytes = tq_codec_bytes(&cc, r, c);
    row.omega = omega;
    CHECK(tq_sens_table_add(t, &row) == TQ_OK, "add");
}

static void test_table(void)
{
    tq_sens_table* t = NULL;
    CHECK(tq_sens_table_create(&t) == TQ_OK, "create");
    const char* cods[] = {"tq2", "tq3", "tq4", "rtn4", "rtn8:g64", "f32"};
    char name[128];
    for (int l = 0; l < 3; l++) {
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.%s_proj.weight", l, k ? "up" : "down");
            for (int c = 0; c < 6; c++)
                add(t, name, k ? "mlp_up" : "mlp_down", 256, 256, cods[c],
                    c == 5 ? 0 : (1.0 + l) * pow(0.3, c) * (k ? 1 : 2));
        }
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        add(t, name, "norm", 1, 256, "f32", 0);
        add(t, name, "norm", 1, 256, "fp16", 1e-9);
    }
    add(t, "model.embed_tokens.weight", "embed", 512, 256, "f32", 0);
    add(t, "model.embed_tokens.weight", "embed", 512, 256, "tq2", 50);
    int64_t tw = tq_sens_table_weights(t);
    CHECK(tw == 6 * 256 * 256 + 3 * 256 + 512 * 256, "weights %lld", (long long)tw);
    /* table text round trip */
    char* text = NULL;
    size_t len = 0;
    CHECK(tq_sens_table_format(t, &text, &len) == TQ_OK, "format");
    tq_sens_table* t2 = NULL;
    CHECK(tq_sens_table_parse(text, len, "mem", &t2) == TQ_OK, "parse: %s", tq_last_error());
    CHECK(t2 && t2->n == t->n, "row count");
    if (t2)
        for (int64_t i = 0; i < t->n; i++) {
            CHECK(!strcmp(t->rows[i].tensor, t2->rows[i].tensor) && !strcmp(t->rows[i].codec, t2->rows[i].codec) &&
                      t->rows[i].bytes == t2->rows[i].bytes &&
                      fabs(t->rows[i].omega - t2->rows[i].omega) <= 1e-8 * fabs(t->rows[i].omega),
                  "row %lld differs after round trip", (long long)i);
        }
    free(text);
    tq_sens_table_free(&t2);

    /* budget parse */
    uint64_t b = 0;
    CHECK(tq_budget_parse("2.5bpw", 1000, &b) == TQ_OK && b == 312, "2.5bpw -> %llu", (unsigned long long)b);
    CHECK(tq_budget_parse("18GB", 1, &b) == TQ_OK && b == 18000000000ull, "18GB");
    CHECK(tq_budget_parse("18GiB", 1, &b) == TQ_OK && b == 18ull << 30, "18GiB");
    CHECK(tq_budget_parse("1.5 MiB", 1, &b) == TQ_OK && b == 1572864ull, "1.5 MiB");
    CHECK(tq_budget_parse("81260", 1, &b) == TQ_OK && b == 81260, "bytes");
    CHECK(tq_budget_parse("2.5 parsecs", 1, &b) == TQ_ERR_ARG, "bad unit accepted");
    CHECK(tq_budget_parse("-3GB", 1, &b) == TQ_ERR_ARG, "negative accepted");

    /* allocation with rules: norms f32 (by role), embeddings tq2 (by glob) */
    tq_alloc_rule rules[2];
    memset(rules, 0, sizeof rules);
    snprintf(rules[0].key, sizeof rules[0].key, "norm");
    snprintf(rules[0].codec, sizeof rules[0].codec, "f32");
    snprintf(rules[1].key, sizeof rules[1].key, "model.embed_*");
    snprintf(rules[1].codec, sizeof rules[1].codec, "tq2");
    tq_alloc_opts o;
    memset(&o, 0, sizeof o);
    o.rules = rules;
    o.n_rules = 2;
    CHECK(tq_budget_parse("3.5bpw", tw, &o.budget_bytes) == TQ_OK, "budget");
    tq_plan* p = NULL;
    CHECK(tq_allocate(t, &o, &p) == TQ_OK, "allocate: %s", tq_last_error());
    if (p) {
        CHECK(p->n == 10, "plan has %lld tensors", (long long)p->n);
        CHECK(p->total_bytes <= o.budget_bytes, "over budget");
        uint64_t sum = 0;
        for (int64_t i = 0; i < p->n; i++) sum += p->e[i].bytes;
        CHECK(sum == p->total_bytes, "every tensor counted: %llu vs %llu", (unsigned long long)sum,
              (unsigned long long)p->total_bytes);
        CHECK(!strcmp(tq_plan_codec(p, "model.embed_tokens.weight"), "tq2"), "embed rule");
        CHECK(!strcmp(tq_plan_codec(p, "model.layers.1.input_layernorm.weight"), "f32"), "norm rule");
        CHECK(p->proven_optimal, "small table must be solved exactly");
        /* plan text round trip */
        CHECK(tq_plan_format(p, &text, &len) == TQ_OK, "plan format");
        tq_plan* q = NULL;
        CHECK(tq_plan_parse(text, len, "plan.txt", &q) == TQ_OK, "plan parse: %s", tq_last_error());
        if (q) {
            CHECK(q->n == p->n, "plan round trip count");
            for (int64_t i = 0; i < p->n; i++)
                CHECK(!strcmp(q->e[i].tensor, p->e[i].tensor) && !strcmp(q->e[i].codec, p->e[i].codec),
                      "plan round trip entry %lld", (long long)i);
        }
        tq_plan_free(&q);
        free(text);
    }
    tq_plan_free(&p);
    /* allowed codecs only tq3 (+ rules): every mlp tensor gets tq3 */
    const char* allowed[] = {"tq3"};
    o.codecs = allowed;
    o.n_codecs = 1;
    o.budget_bytes = UINT64_MAX / 2;
    CHECK(tq_allocate(t, &o, &p) == TQ_OK, "allocate tq3: %s", tq_last_error());
    if (p) CHECK(!strcmp(tq_plan_codec(p, "model.layers.2.mlp.up_proj.weight"), "tq3"), "allowed codecs");
    tq_plan_free(&p);
    /* the uniform plan of rtn4 (the guard's baseline): every mlp tensor rtn4, rules for norms and the
     * embedding, budget copied not enforced; header notes are written as comments and ignored on parse */
    o.codecs = NULL;
    o.budget_bytes = 1234;
    CHECK(tq_plan_uniform(t, &o, "rtn4", &p) == TQ_OK, "uniform: %s", tq_last_error());
    if (p) {
        CHECK(p->n == 10 && p->budget_bytes == 1234 && p->lower_bound < 0, "uniform plan: %lld tensors, budget %llu",
              (long long)p->n, (unsigned long long)p->budget_bytes);
        tq_codec c4, c2;
        CHECK(tq_codec_label_parse("rtn4", &c4) == TQ_OK && tq_codec_label_parse("tq2", &c2) == TQ_OK, "labels");
        uint64_t want = 6 * tq_codec_bytes(&c4, 256, 256) + 3 * 1024 + tq_codec_bytes(&c2, 512, 256);
        CHECK(p->total_bytes == want, "uniform bytes %llu, want %llu", (unsigned long long)p->total_bytes,
              (unsigned long long)want);
        for (int64_t i = 0; i < p->n; i++)
            CHECK(!strcmp(p->e[i].codec, !strcmp(p->e[i].role, "norm") ? "f32" : !strcmp(p->e[i].role, "embed") ? "tq2" : "rtn4"),
                  "uniform: %s got %s", p->e[i].tensor, p->e[i].codec);
        CHECK(tq_plan_entry_of(p, "model.layers.0.mlp.up_proj.weight") &&
                  !strcmp(tq_plan_entry_of(p, "model.layers.0.mlp.up_proj.weight")->role, "mlp_up") &&
                  !tq_plan_entry_of(p, "model.layers.9.mlp.up_proj.weight"),
              "tq_plan_entry_of");
        snprintf(p->notes, sizeof p->notes, "guard: first line\nguard: second line");
        CHECK(tq_plan_format(p, &text, &len) == TQ_OK, "plan format with notes");
        if (text) {
            CHECK(strstr(text, "\n# guard: first line\n# guard: second line\n") != NULL, "notes not written: %s", text);
            CHECK(strstr(text, "no lower bound") != NULL, "a plan without a bound must say so: %s", text);
            tq_plan* q = NULL;
            CHECK(tq_plan_parse(text, len, "plan.txt", &q) == TQ_OK && q && q->n == 10, "parse with notes: %s",
                  tq_last_error());
            tq_plan_free(&q);
        }
        free(text);
        text = NULL;
    }
    tq_plan_free(&p);
    /* a budget below the minimum */
    o.codecs = NULL;
    o.budget_bytes = 1000;
    CHECK(tq_allocate(t, &o, &p) == TQ_ERR_ARG, "tiny budget accepted");
    CHECK(strstr(tq_last_error(), "smallest possible model") != NULL, "message: %s", tq_last_error());
    /* rules text */
    tq_alloc_rule* rr = NULL;
    int nr = 0;
    CHECK(tq_alloc_rules_parse("# keep\nnorm f32\nembed=int8\n\nmodel.layers.*.mlp.down_proj.weight rtn8 # x\n",
                               "rules", &rr, &nr) == TQ_OK && nr == 3,
          "rules parse: %s", tq_last_error());
    if (nr == 3) CHECK(!strcmp(rr[1].key, "embed") && !strcmp(rr[1].codec, "int8"), "rule 2");
    free(rr);
    CHECK(tq_alloc_rules_parse("norm f32\nembed bogus9\n", "rules.txt", &rr, &nr) == TQ_ERR_FORMAT, "bad codec");
    CHECK(strstr(tq_last_error(), "line 2") != NULL, "rules error names the line: %s", tq_last_error());
    tq_sens_table_free(&t);
}

/* tq_omega (blocked dgemm) against a direct double loop, full and diagonal H */
static void test_omega(void)
{
    const int64_t R = 70, N = 37;
    float* dw = malloc((size_t)(R * N) * sizeof(float));
    double* h = malloc((size_t)(N * N) * sizeof(double));
    double* hd = malloc((size_t)N * sizeof(double));
    tq_rng = 777;
    for (int64_t i = 0; i < R * N; i++) dw[i] = (float)(tq_rand_unit() - 0.5);
    for (int64_t a = 0; a < N; a++)
        for (int64_t b = a; b < N; b++) h[a * N + b] = h[b * N + a] = (a == b ? 2.0 : 0.0) + 0.3 * (tq_rand_unit() - 0.5);
    for (int64_t a = 0; a < N; a++) hd[a] = h[a * N + a];
    double ref = 0, refd = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t a = 0; a < N; a++) {
            refd += (double)dw[r * N + a] * dw[r * N + a] * hd[a];
            for (int64_t b = 0; b < N; b++) ref += (double)dw[r * N + a] * h[a * N + b] * dw[r * N + b];
        }
    double o = tq_omega(dw, R, N, h, 0), od = tq_omega(dw, R, N, hd, 1);
    CHECK(fabs(o - ref) <= 1e-12 * fabs(ref), "omega full %.17g vs %.17g", o, ref);
    CHECK(fabs(od - refd) <= 1e-12 * fabs(refd), "omega diag %.17g vs %.17g", od, refd);
    free(dw);
    free(h);
    free(hd);
}

int main(void)
{
    test_omega();
    test_bruteforce();
    test_large();
    test_table();
    printf("%s (%d failures)\n", n_failed ? "FAILED" : "ok", n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
