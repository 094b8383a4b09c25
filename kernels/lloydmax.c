/* lloydmax.c — Lloyd-Max codebooks for N(0,1) and for the Beta law of a unit-vector coordinate.
 * See lloydmax.h. Everything in double. Cell masses:
 *   Gaussian: P[a,b] = (erfc(a/√2) - erfc(b/√2)) / 2, first moment φ(a) - φ(b).
 *   Beta(d):  x = 2t - 1 maps the law to Beta((d-1)/2, (d-1)/2) in t, so the CDF is the regularized
 *             incomplete beta I_{(1+x)/2}(a, a) with a = (d-1)/2 (continued fraction, modified Lentz);
 *             the first moment is closed form: ∫ x C (1-x²)^α dx = -C (1-x²)^(α+1) / (2(α+1)),
 *             α = (d-3)/2, C = Γ(d/2) / (√π Γ((d-1)/2)).
 *             The second moment over a cell (for the MSE of an arbitrary codebook) follows from
 *             x² f_d = f_d - (d-1)/d · f_{d+2}. */
#include "lloydmax.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------------------------------------
// regularized incomplete beta I_x(a, b)

static double tq_betacf(double a, double b, double x)
{
    const double tiny = 1e-300, eps = 1e-16;
    double qab = a + b, qap = a + 1.0, qam = a - 1.0;
    double c = 1.0, d = 1.0 - qab * x / qap;
    if (fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    double h = d;
    for (int m = 1; m <= 100000; m++) {
        int m2 = 2 * m;
        double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        h *= d * c;
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if (fabs(d) < tiny) d = tiny;
        c = 1.0 + aa / c;
        if (fabs(c) < tiny) c = tiny;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < eps) break;
    }
    return h;
}

static double tq_betai(double a, double b, double x)
{
    if (x <= 0.0) return 0.0;
    if (x >= 1.0) return 1.0;
    double lfront = lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log1p(-x);
    double front = exp(lfront);
    if (x < (a + 1.0) / (a + b + 2.0)) return front * tq_betacf(a, b, x) / a;
    return 1.0 - front * tq_betacf(b, a, 1.0 - x) / b;
}

// ------------------------------------------------------------------------------------------------
// laws: CDF and first moment on a cell

typedef struct {
    tq_law law;
    int d;
    double a;     /* Beta parameter (d-1)/2 */
    double c1;    /* C / (2(α+1)) = C / (d-1): first-moment factor */
} tq_lawp;

static double tq_law_cdf(const tq_lawp* L, double x)
{
    if (L->law == TQ_LAW_GAUSS) return 0.5 * erfc(-x / sqrt(2.0));
    if (x <= -1.0) return 0.0;
    if (x >= 1.0) return 1.0;
    /* symmetric law: evaluate the smaller tail directly for precision */
    if (x > 0) return 1.0 - tq_betai(L->a, L->a, (1.0 - x) / 2.0);
    return tq_betai(L->a, L->a, (1.0 + x) / 2.0);
}

/* mass on [lo, hi] */
static double tq_law_mass(const tq_lawp* L, double lo, double hi)
{
    if (L->law == TQ_LAW_GAUSS) return 0.5 * (erfc(lo / sqrt(2.0)) - erfc(hi / sqrt(2.0)));
    /* use the tail on each side for precision */
    if (lo >= 0) return (1.0 - tq_law_cdf(L, lo)) - (1.0 - tq_law_cdf(L, hi));
    return tq_law_cdf(L, hi) - tq_law_cdf(L, lo);
}

/* antiderivative G of x f(x): ∫_lo^hi x f = G(hi) - G(lo) */
static double tq_law_g1(const tq_lawp* L, double x)
{
    if (L->law == TQ_LAW_GAUSS) {
        if (isinf(x)) return 0.0;
        return -exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    }
    if (x <= -1.0 || x >= 1.0) return 0.0;
    /* -(C/(d-1)) (1-x²)^((d-1)/2) */
    return -L->c1 * pow((1.0 - x) * (1.0 + x), (L->d - 1) / 2.0);
}

static void tq_law_init(tq_lawp* L, tq_law law, int d)
{
    memset(L, 0, sizeof *L);
    L->law = law;
    L->d = d;
    if (law == TQ_LAW_BETA && d >= 2) {
        L->a = (d - 1) / 2.0;
        double lc = lgamma(d / 2.0) - 0.5 * log(M_PI) - lgamma((d - 1) / 2.0);
        L->c1 = exp(lc) / (d - 1);
    }
}

// ------------------------------------------------------------------------------------------------
// Lloyd iterations

static tq_status tq_lloyd_run(tq_law law, int d, int bits, double* c, double* mse_out)
{
    int n = 1 << bits;
    if (law == TQ_LAW_BETA && d == 1) { /* the two-point law ±1: any codebook holding ±1 is exact */
        for (int i = 0; i < n; i++) c[i] = n == 1 ? 0.0 : -1.0 + 2.0 * i / (n - 1);
        if (mse_out) *mse_out = 0.0;
        return TQ_OK;
    }
    tq_lawp L;
    tq_law_init(&L, law, d);
    double lo_end = law == TQ_LAW_GAUSS ? -INFINITY : -1.0;
    double hi_end = law == TQ_LAW_GAUSS ? INFINITY : 1.0;
    double sd = law == TQ_LAW_GAUSS ? 1.0 : 1.0 / sqrt((double)d);
    double ex2 = law == TQ_LAW_GAUSS ? 1.0 : 1.0 / d;
    /* start: uniform quantiles of ±2.5 sd (clipped inside the support) */
    for (int i = 0; i < n; i++) {
        double v = sd * 2.5 * (2.0 * (i + 0.5) / n - 1.0);
        if (v <= lo_end * 0.999) v = lo_end * 0.999;
        if (v >= hi_end * 0.999) v = hi_end * 0.999;
        c[i] = v;
    }
    double t[TQ_LM_MAX_BITS > 0 ? (1 << TQ_LM_MAX_BITS) + 1 : 1];
    double p[1 << TQ_LM_MAX_BITS];
    int converged = 0;
    for (int it = 0; it < 200000 && !converged; it++) {
        t[0] = lo_end;
        t[n] = hi_end;
        for (int i = 1; i < n; i++) t[i] = 0.5 * (c[i - 1] + c[i]);
        double maxmove = 0.0;
        for (int i = 0; i < n; i++) {
            double m = tq_law_mass(&L, t[i], t[i + 1]);
            double m1 = tq_law_g1(&L, t[i + 1]) - tq_law_g1(&L, t[i]);
            double nc = m > 1e-300 ? m1 / m : 0.5 * (t[i] + t[i + 1]);
            double mv = fabs(nc - c[i]);
            if (mv > maxmove) maxmove = mv;
            c[i] = nc;
            p[i] = m;
        }
        /* enforce exact symmetry */
        for (int i = 0; i < n / 2; i++) {
            double v = 0.5 * (c[n - 1 - i] - c[i]);
            c[i] = -v;
            c[n - 1 - i] = v;
        }
        if (maxmove < 1e-12 * sd) converged = 1;
    }
    if (!converged)
        return tq_fail(TQ_ERR_NUMERIC, "Lloyd-Max iteration did not converge (law %s, d=%d, b=%d)",
                       law == TQ_LAW_GAUSS ? "gauss" : "beta", d, bits);
    /* centroids are the conditional means of the last boundaries: MSE = E[x²] - Σ P c² */
    double s = 0.0;
    for (int i = 0; i < n; i++) s += p[i] * c[i] * c[i];
    if (mse_out) *mse_out = ex2 - s;
    return TQ_OK;
}

double tq_lloydmax_beta_mse_of(int d, int bits, const double* c)
{
    int n = 1 << bits;
    if (d == 1) {
        double e0 = 1.0, e1 = 1.0; /* nearest centroid to -1 and +1 */
        for (int i = 0; i < n; i++) {
            if (fabs(c[i] + 1) < e0) e0 = fabs(c[i] + 1);
            if (fabs(c[i] - 1) < e1) e1 = fabs(c[i] - 1);
        }
        return 0.5 * (e0 * e0 + e1 * e1);
    }
    tq_lawp L, L2;
    tq_law_init(&L, TQ_LAW_BETA, d);
    tq_law_init(&L2, TQ_LAW_BETA, d + 2);
    double mse = 0.0;
    for (int i = 0; i < n; i++) {
        double lo = i == 0 ? -1.0 : 0.5 * (c[i - 1] + c[i]);
        double hi = i == n - 1 ? 1.0 : 0.5 * (c[i] + c[i + 1]);
        double m = tq_law_mass(&L, lo, hi);
        double m1 = tq_law_g1(&L, hi) - tq_law_g1(&L, lo);
        double m2 = m - (double)(d - 1) / d * tq_law_mass(&L2, lo, hi);
        mse += m2 - 2.0 * c[i] * m1 + c[i] * c[i] * m;
    }
    return mse;
}

// ------------------------------------------------------------------------------------------------
// cache

typedef struct tq_lm_entry {
    tq_law law;
    int d, bits;
    double mse;
    double c[1 << TQ_LM_MAX_BITS];
    struct tq_lm_entry* next;
} tq_lm_entry;

static pthread_mutex_t tq_lm_mu = PTHREAD_MUTEX_INITIALIZER;
static tq_lm_entry* tq_lm_head;

tq_status tq_lloydmax(tq_law law, int d, int bits, double* centroids, double* mse)
{
    if (bits < 1 || bits > TQ_LM_MAX_BITS)
        return tq_fail(TQ_ERR_ARG, "Lloyd-Max: bits must be 1..%d (got %d)", TQ_LM_MAX_BITS, bits);
    if (law != TQ_LAW_GAUSS && law != TQ_LAW_BETA) return tq_fail(TQ_ERR_ARG, "Lloyd-Max: unknown law %d", (int)law);
    if (law == TQ_LAW_GAUSS) d = 0;
    else if (d < 1 || d > (1 << 24)) return tq_fail(TQ_ERR_ARG, "Lloyd-Max: dimension d=%d out of range", d);
    int n = 1 << bits;
    pthread_mutex_lock(&tq_lm_mu);
    tq_lm_entry* e = tq_lm_head;
    while (e && !(e->law == law && e->d == d && e->bits == bits)) e = e->next;
    tq_status rc = TQ_OK;
    if (!e) {
        /* compute under the lock: rare, and keeps every thread seeing one result */
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&tq_lm_mu);
            return tq_fail(TQ_ERR_NOMEM, "Lloyd-Max: out of memory");
        }
        e->law = law;
        e->d = d;
        e->bits = bits;
        rc = tq_lloyd_run(law, d, bits, e->c, &e->mse);
        if (rc == TQ_OK) {
            e->next = tq_lm_head;
            tq_lm_head = e;
        } else {
            free(e);
            e = NULL;
        }
    }
    pthread_mutex_unlock(&tq_lm_mu);
    if (rc != TQ_OK) return rc;
    if (centroids) memcpy(centroids, e->c, (size_t)n * sizeof(double));
    if (mse) *mse = e->mse;
    return TQ_OK;
}

tq_status tq_lloydmax_unit_f32(tq_law law, int d, int bits, float* centroids)
{
    double c[1 << TQ_LM_MAX_BITS];
    TQ_FORWARD(tq_lloydmax(law, d, bits, c, NULL));
    double sc = law == TQ_LAW_GAUSS ? 1.0 / sqrt((double)(d > 0 ? d : 1)) : 1.0;
    for (int i = 0; i < (1 << bits); i++) centroids[i] = (float)(c[i] * sc);
    return TQ_OK;
}
