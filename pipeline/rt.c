/* rt.c — the MPI runtime (see rt.h): init/finalize, node-local ranks, collective error agreement,
 * job abort, progress lines with rate and ETA, and a few collective helpers so stages need no mpi.h.
 *
 * Error model (why it is shaped this way):
 *  - Recoverable errors travel as tq_status to a COLLECTIVE tq_rt_agree(): one MPI_Allreduce(MIN) of
 *    (failed ? rank : INT_MAX) finds the lowest failing rank, which then MPI_Bcasts its status and
 *    message; every rank returns that status and the CLI exits non-zero on every rank.
 *    Before entering the reduction, a failing rank sends a one-int notice to every other rank on a
 *    private communicator; ranks in long loops poll tq_rt_peer_failed() and join the agreement early.
 *    The failing rank waits at most TQ_AGREE_TIMEOUT s for the others, then MPI_Aborts the job.
 *  - A rank that dies outright (signal, _exit, return from main without MPI_Finalize) is caught by the
 *    launcher: Open MPI's mpirun tears the whole job down when a process exits abnormally or with a
 *    non-zero status before finalize; under Slurm use srun --kill-on-bad-exit=1.
 *  - MPI errors keep the default MPI_ERRORS_ARE_FATAL handler: a broken communicator aborts the job
 *    instead of leaving a rank waiting forever.
 *
 * Progress protocol (mpifileutils-style, but point-to-point so it never needs every rank at once):
 * each non-root rank sends {done, final?} to rank 0 with MPI_Isend at most once per interval (and only
 * when its previous send completed); rank 0 drains whatever has arrived with MPI_Iprobe whenever it
 * calls update, and prints. tq_progress_finish sends the final count; rank 0 receives one final message
 * from every rank (messages from one sender are not overtaken, so the channel is empty afterwards). */
#include "rt.h"

#include <limits.h>
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int g_refs;                          /* tq_rt_init calls not yet finalized */
static MPI_Comm g_prog_comm = MPI_COMM_NULL; /* dup of WORLD for progress messages */
static MPI_Comm g_err_comm = MPI_COMM_NULL;  /* dup of WORLD for "I failed" notices */
#define TQ_ERR_TAG 77
static int g_prog_seq;                      /* progress instances started (same order on every rank) */

static int mpi_usable(void)
{
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

static int rt_active(const tq_rt* rt) { return rt && rt->size > 0 && mpi_usable(); }

static tq_status mpi_fail(int err, const char* what)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(err, msg, &len);
    return tq_fail(TQ_ERR_MPI, "%s failed: %s", what, msg);
}

// ------------------------------------------------------------------------------------------------
// init / finalize

tq_status tq_rt_init(tq_rt* rt, int* argc, char*** argv)
{
    if (!rt) return tq_fail(TQ_ERR_ARG, "tq_rt_init: rt is NULL");
    memset(rt, 0, sizeof *rt);
    int init = 0, fin = 0;
    MPI_Finalized(&fin);
    if (fin) return tq_fail(TQ_ERR_MPI, "MPI was already finalized: tq_rt_init must run before any tq_rt_finalize");
    MPI_Initialized(&init);
    if (!init) {
        int provided = 0;
        int err = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (err != MPI_SUCCESS) return tq_fail(TQ_ERR_MPI, "MPI_Init_thread failed (is the MPI launcher working? try mpirun -np 1)");
        rt->initialized_mpi = 1;
    }
    int err = MPI_Comm_rank(MPI_COMM_WORLD, &rt->rank);
    if (err == MPI_SUCCESS) err = MPI_Comm_size(MPI_COMM_WORLD, &rt->size);
    if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Comm_rank/size");

    MPI_Comm local = MPI_COMM_NULL;
    err = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rt->rank, MPI_INFO_NULL, &local);
    if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
    MPI_Comm_rank(local, &rt->local_rank);
    MPI_Comm_size(local, &rt->local_size);
    MPI_Comm_free(&local);

    if (g_refs++ == 0) {
        err = MPI_Comm_dup(MPI_COMM_WORLD, &g_prog_comm);
        if (err == MPI_SUCCESS) err = MPI_Comm_dup(MPI_COMM_WORLD, &g_err_comm);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Comm_dup");
        g_prog_seq = 0;
    }
    tq_log_set_rank(rt->rank);
    return TQ_OK;
}

void tq_rt_finalize(tq_rt* rt)
{
    if (!rt || rt->size == 0) return;
    if (g_refs > 0 && --g_refs == 0 && mpi_usable()) {
        if (g_prog_comm != MPI_COMM_NULL) MPI_Comm_free(&g_prog_comm);
        if (g_err_comm != MPI_COMM_NULL) MPI_Comm_free(&g_err_comm);
    }
    if (rt->initialized_mpi && mpi_usable()) MPI_Finalize();
    rt->size = 0;
    rt->initialized_mpi = 0;
}

// ------------------------------------------------------------------------------------------------
// errors

typedef struct {
    int status;
    int nfailed;
    char msg[2000];
} agree_msg;

static double agree_timeout(void)
{
    const char* e = getenv("TQ_AGREE_TIMEOUT");
    double t = e && e[0] ? atof(e) : 60.0;
    return t < 0 ? 0 : t;
}

int tq_rt_peer_failed(const tq_rt* rt)
{
    if (!rt_active(rt) || rt->size < 2 || g_err_comm == MPI_COMM_NULL) return 0;
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, TQ_ERR_TAG, g_err_comm, &flag, MPI_STATUS_IGNORE);
    return flag;
}

tq_status tq_rt_agree(const tq_rt* rt, tq_status local)
{
    if (!rt_active(rt)) return local;
    /* 1. A failing rank first tells every other rank, so ranks busy in a loop can stop early. */
    int notice = rt->rank;
    MPI_Request* nreq = NULL;
    int nn = 0;
    if (local != TQ_OK && rt->size > 1 && g_err_comm != MPI_COMM_NULL) {
        nreq = malloc((size_t)rt->size * sizeof *nreq);
        for (int r = 0; r < rt->size; r++) {
            if (r == rt->rank) continue;
            if (nreq) MPI_Isend(&notice, 1, MPI_INT, r, TQ_ERR_TAG, g_err_comm, &nreq[nn++]);
            else MPI_Send(&notice, 1, MPI_INT, r, TQ_ERR_TAG, g_err_comm); /* tiny: goes eagerly */
        }
    }
    /* 2. Lowest failing rank. A failing rank does not wait forever for ranks that never come. */
    int mine = local != TQ_OK ? rt->rank : INT_MAX;
    int first = INT_MAX;
    MPI_Request req;
    int err = MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req);
    if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Iallreduce (error agreement)");
    double limit = agree_timeout();
    if (local != TQ_OK && limit > 0) {
        double t0 = tq_rt_time();
        int done = 0;
        while (!done) {
            MPI_Test(&req, &done, MPI_STATUS_IGNORE);
            if (done) break;
            if (tq_rt_time() - t0 > limit) {
                char msg[1024];
                snprintf(msg, sizeof msg, "%s", tq_last_error()[0] ? tq_last_error() : tq_status_str(local));
                tq_rt_abort(local, "rank %d failed (%s) and the other ranks did not join the error agreement within %.0f s "
                                   "(TQ_AGREE_TIMEOUT): %s", rt->rank, tq_status_str(local), limit, msg);
            }
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    } else {
        MPI_Wait(&req, MPI_STATUS_IGNORE);
    }
    if (first == INT_MAX) {
        free(nreq);
        return TQ_OK;
    }

    /* 3. Somebody failed: count the failures, broadcast the first one's status and message. */
    int one = local != TQ_OK, nfailed = 0;
    MPI_Allreduce(&one, &nfailed, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    agree_msg m;
    memset(&m, 0, sizeof m);
    if (rt->rank == first) {
        m.status = (int)local;
        const char* e = tq_last_error();
        snprintf(m.msg, sizeof m.msg, "%s", e && e[0] ? e : tq_status_str(local));
    }
    err = MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Bcast (error agreement)");

    /* 4. Drain the notices: one from every failing rank but myself (all were sent before step 2). */
    if (g_err_comm != MPI_COMM_NULL) {
        for (int k = 0; k < nfailed - one; k++) {
            int from;
            MPI_Recv(&from, 1, MPI_INT, MPI_ANY_SOURCE, TQ_ERR_TAG, g_err_comm, MPI_STATUS_IGNORE);
        }
    }
    if (nreq) {
        MPI_Waitall(nn, nreq, MPI_STATUSES_IGNORE);
        free(nreq);
    }

    char prefix[32];
    snprintf(prefix, sizeof prefix, "rank %d: ", first);
    const char* body = m.msg;
    if (rt->size == 1) { /* a single rank: the message is already the whole story */
        tq_fail((tq_status)m.status, "%s", body);
    } else if (!strncmp(body, "rank ", 5)) { /* already agreed once (nested): keep the original origin */
        tq_fail((tq_status)m.status, "%s", body);
    } else if (nfailed > 1) {
        tq_fail((tq_status)m.status, "%s%s (%d of %d ranks failed)", prefix, body, nfailed, rt->size);
    } else {
        tq_fail((tq_status)m.status, "%s%s", prefix, body);
    }
    return (tq_status)m.status;
}

void tq_rt_abort(tq_status rc, const char* fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int code = rc == TQ_OK ? 1 : (int)rc;
    TQ_LOG(TQ_LOG_ERR, "aborting the job (%s): %s", tq_status_str(rc), msg);
    if (mpi_usable()) MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code); /* MPI_Abort does not return; this covers use without MPI */
}

void tq_rt_barrier(const tq_rt* rt)
{
    if (rt_active(rt)) MPI_Barrier(MPI_COMM_WORLD);
}

double tq_rt_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

tq_status tq_rt_fault_point(const tq_rt* rt, const char* where)
{
    const char* e = getenv("TQ_FAULT_RT");
    if (!e || !e[0]) return TQ_OK;
    char kind[16] = "";
    int r = -1;
    if (sscanf(e, "%15[a-z]:%d", kind, &r) != 2) return TQ_OK;
    int me = rt && rt->size > 0 ? rt->rank : 0;
    if (r != me) return TQ_OK;
    where = where ? where : "?";
    if (!strcmp(kind, "fail"))
        return tq_fail(TQ_ERR_INJECTED, "injected failure at %s (TQ_FAULT_RT=%s)", where, e);
    if (!strcmp(kind, "kill")) {
        TQ_LOG(TQ_LOG_WARN, "TQ_FAULT_RT: SIGKILL myself at %s", where);
        raise(SIGKILL);
    }
    if (!strcmp(kind, "exit")) {
        TQ_LOG(TQ_LOG_WARN, "TQ_FAULT_RT: _exit(3) without MPI_Finalize at %s", where);
        _exit(3);
    }
    if (!strcmp(kind, "abort")) tq_rt_abort(TQ_ERR_INJECTED, "injected abort at %s (TQ_FAULT_RT=%s)", where, e);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// collective helpers

static tq_status allreduce(const tq_rt* rt, void* vals, int n, MPI_Datatype t, MPI_Op op, const char* what)
{
    if (!rt_active(rt) || n <= 0) return TQ_OK;
    int err = MPI_Allreduce(MPI_IN_PLACE, vals, n, t, op, MPI_COMM_WORLD);
    return err == MPI_SUCCESS ? TQ_OK : mpi_fail(err, what);
}

tq_status tq_rt_allreduce_sum_u64(const tq_rt* rt, uint64_t* vals, int n)
{
    return allreduce(rt, vals, n, MPI_UINT64_T, MPI_SUM, "MPI_Allreduce(sum u64)");
}

tq_status tq_rt_allreduce_sum_f64(const tq_rt* rt, double* vals, int n)
{
    return allreduce(rt, vals, n, MPI_DOUBLE, MPI_SUM, "MPI_Allreduce(sum f64)");
}

tq_status tq_rt_allreduce_max_f64(const tq_rt* rt, double* vals, int n)
{
    return allreduce(rt, vals, n, MPI_DOUBLE, MPI_MAX, "MPI_Allreduce(max f64)");
}

tq_status tq_rt_allreduce_min_f64(const tq_rt* rt, double* vals, int n)
{
    return allreduce(rt, vals, n, MPI_DOUBLE, MPI_MIN, "MPI_Allreduce(min f64)");
}

tq_status tq_rt_bcast(const tq_rt* rt, void* buf, size_t len, int root)
{
    if (!rt_active(rt) || len == 0) return TQ_OK;
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        int err = MPI_Bcast((char*)buf + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(err, "MPI_Bcast");
    }
    return TQ_OK;
}

tq_status tq_rt_gather_bytes(const tq_rt* rt, const void* send, size_t n, void** out, size_t** counts)
{
    *out = NULL;
    *counts = NULL;
    if (n > (size_t)INT_MAX) return tq_fail(TQ_ERR_ARG, "tq_rt_gather_bytes: %zu bytes from one rank (limit 2 GiB)", n);
    if (!rt_active(rt)) { /* single process without MPI */
        *out = malloc(n ? n : 1);
        *counts = malloc(sizeof(size_t));
        if (!*out || !*counts) {
            free(*out);
            free(*counts);
            *out = NULL;
            *counts = NULL;
            return tq_fail(TQ_ERR_NOMEM, "tq_rt_gather_bytes: out of memory");
        }
        if (n) memcpy(*out, send, n);
        (*counts)[0] = n;
        return TQ_OK;
    }
    uint64_t mine = n;
    uint64_t* all = NULL;
    int* icounts = NULL;
    int* displs = NULL;
    char* buf = NULL;
    tq_status rc = TQ_OK;
    int bad = 0;
    if (rt->rank == 0) {
        all = calloc((size_t)rt->size, sizeof *all);
        icounts = calloc((size_t)rt->size, sizeof *icounts);
        displs = calloc((size_t)rt->size, sizeof *displs);
        bad = !all || !icounts || !displs;
    }
    /* Every rank must enter the same collectives even when rank 0 is out of memory. */
    int err = MPI_Gather(&mine, 1, MPI_UINT64_T, bad ? NULL : all, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) {
        rc = mpi_fail(err, "MPI_Gather (sizes)");
        goto out;
    }
    size_t total = 0;
    if (rt->rank == 0 && !bad) {
        for (int r = 0; r < rt->size; r++) {
            if (total + all[r] > (size_t)INT_MAX) bad = 2;
            displs[r] = (int)total;
            icounts[r] = (int)all[r];
            total += all[r];
        }
        if (!bad) {
            buf = malloc(total ? total : 1);
            if (!buf) bad = 1;
        }
    }
    MPI_Bcast(&bad, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (bad) {
        rc = bad == 2 ? tq_fail(TQ_ERR_ARG, "tq_rt_gather_bytes: more than 2 GiB in total")
                      : tq_fail(TQ_ERR_NOMEM, "tq_rt_gather_bytes: out of memory on rank 0");
        goto out;
    }
    err = MPI_Gatherv(send, (int)n, MPI_BYTE, buf, icounts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (err != MPI_SUCCESS) {
        rc = mpi_fail(err, "MPI_Gatherv");
        goto out;
    }
    if (rt->rank == 0) {
        size_t* c = malloc((size_t)rt->size * sizeof *c);
        if (!c) {
            rc = tq_fail(TQ_ERR_NOMEM, "tq_rt_gather_bytes: out of memory on rank 0");
            goto out;
        }
        for (int r = 0; r < rt->size; r++) c[r] = (size_t)all[r];
        *out = buf;
        *counts = c;
        buf = NULL;
    }
out:
    free(all);
    free(icounts);
    free(displs);
    free(buf);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// progress

#define TQ_PROG_TAG_BASE 4000

struct tq_progress {
    int rank, size, active, tag;
    char verb[64], unit[16];
    double total, interval;
    double t0, last_print, last_send;
    double local_done;
    double* seen;        /* rank 0: last count from each rank */
    double sendbuf[2];   /* {done, final} */
    MPI_Request req;
    int pending;
    int nfinal_early;    /* rank 0: final messages drained during update */
};

static void fmt_amount(char* out, size_t cap, double v, const char* unit)
{
    if (!strcmp(unit, "B")) {
        if (v >= 1e9) snprintf(out, cap, "%.2f GB", v / 1e9);
        else if (v >= 1e6) snprintf(out, cap, "%.1f MB", v / 1e6);
        else if (v >= 1e3) snprintf(out, cap, "%.1f kB", v / 1e3);
        else snprintf(out, cap, "%.0f B", v);
    } else {
        snprintf(out, cap, "%.0f %s", v, unit);
    }
}

static void fmt_rate(char* out, size_t cap, double v, const char* unit)
{
    if (!strcmp(unit, "B")) {
        if (v >= 1e9) snprintf(out, cap, "%.2f GB/s", v / 1e9);
        else snprintf(out, cap, "%.1f MB/s", v / 1e6);
    } else {
        snprintf(out, cap, "%.1f %s/s", v, unit);
    }
}

static void fmt_secs(char* out, size_t cap, double s)
{
    if (s < 10) snprintf(out, cap, "%.1f s", s);
    else if (s < 36000) snprintf(out, cap, "%.0f s", s);
    else snprintf(out, cap, "%.1f h", s / 3600);
}

static double global_done(const tq_progress* p)
{
    double s = p->local_done;
    for (int r = 1; r < p->size && p->seen; r++) s += p->seen[r];
    return s;
}

static void progress_print(const tq_progress* p, int final)
{
    double el = tq_rt_time() - p->t0;
    double done = global_done(p);
    char a[48], rate[48];
    fmt_amount(a, sizeof a, done, p->unit);
    double r = el > 0 ? done / el : 0.0;
    fmt_rate(rate, sizeof rate, r, p->unit);
    double pct = p->total > 0 ? 100.0 * done / p->total : 100.0;
    char t[32], left[32];
    fmt_secs(t, sizeof t, el);
    if (final) {
        tq_log_msg(TQ_LOG_INFO, __FILE__, __LINE__, "%s %s (%.0f%%) in %s (%s), done", p->verb, a, pct, t, rate);
    } else if (r > 0 && p->total > done) {
        fmt_secs(left, sizeof left, (p->total - done) / r);
        tq_log_msg(TQ_LOG_INFO, __FILE__, __LINE__, "%s %s (%.0f%%) in %s (%s), %s left", p->verb, a, pct, t, rate, left);
    } else {
        tq_log_msg(TQ_LOG_INFO, __FILE__, __LINE__, "%s %s (%.0f%%) in %s (%s)", p->verb, a, pct, t, rate);
    }
}

tq_progress* tq_progress_start(const tq_rt* rt, const char* verb, double total, const char* unit, double interval)
{
    tq_progress* p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->active = rt_active(rt) && g_prog_comm != MPI_COMM_NULL;
    p->rank = p->active ? rt->rank : 0;
    p->size = p->active ? rt->size : 1;
    p->tag = TQ_PROG_TAG_BASE + (g_prog_seq++ % 20000);
    snprintf(p->verb, sizeof p->verb, "%s", verb ? verb : "processed");
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "units");
    p->total = total;
    p->interval = interval;
    p->t0 = p->last_print = p->last_send = tq_rt_time();
    p->req = MPI_REQUEST_NULL;
    if (p->rank == 0 && p->size > 1) {
        p->seen = calloc((size_t)p->size, sizeof *p->seen);
        if (!p->seen) {
            free(p);
            return NULL;
        }
    }
    return p;
}

/* rank 0: receive every message already here; returns the number of final messages seen. */
static int progress_drain(tq_progress* p)
{
    int finals = 0;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, p->tag, g_prog_comm, &flag, &st);
        if (!flag) break;
        double m[2];
        MPI_Recv(m, 2, MPI_DOUBLE, st.MPI_SOURCE, p->tag, g_prog_comm, MPI_STATUS_IGNORE);
        p->seen[st.MPI_SOURCE] = m[0];
        if (m[1] != 0) finals++;
    }
    return finals;
}

void tq_progress_update(tq_progress* p, double local_done)
{
    if (!p) return;
    p->local_done = local_done;
    if (p->interval <= 0) return;
    double now = tq_rt_time();
    if (p->rank != 0) {
        if (!p->active || now - p->last_send < p->interval) return;
        if (p->pending) {
            int done = 0;
            MPI_Test(&p->req, &done, MPI_STATUS_IGNORE);
            if (!done) return;
            p->pending = 0;
        }
        p->sendbuf[0] = local_done;
        p->sendbuf[1] = 0;
        MPI_Isend(p->sendbuf, 2, MPI_DOUBLE, 0, p->tag, g_prog_comm, &p->req);
        p->pending = 1;
        p->last_send = now;
        return;
    }
    /* rank 0: finals can't arrive before this rank's own finish, except from ranks already done */
    if (p->active && p->size > 1) p->nfinal_early += progress_drain(p);
    if (now - p->last_print >= p->interval) {
        progress_print(p, 0);
        p->last_print = now;
    }
}

double tq_progress_done(const tq_progress* p) { return p ? global_done(p) : 0.0; }

double tq_progress_elapsed(const tq_progress* p) { return p ? tq_rt_time() - p->t0 : 0.0; }

void tq_progress_finish(tq_progress** pp)
{
    if (!pp || !*pp) return;
    tq_progress* p = *pp;
    if (p->active && p->size > 1) {
        if (p->rank != 0) {
            if (p->pending) MPI_Wait(&p->req, MPI_STATUS_IGNORE);
            p->sendbuf[0] = p->local_done;
            p->sendbuf[1] = 1;
            MPI_Send(p->sendbuf, 2, MPI_DOUBLE, 0, p->tag, g_prog_comm);
        } else {
            int finals = p->nfinal_early + progress_drain(p);
            while (finals < p->size - 1) {
                double m[2];
                MPI_Status st;
                MPI_Recv(m, 2, MPI_DOUBLE, MPI_ANY_SOURCE, p->tag, g_prog_comm, &st);
                p->seen[st.MPI_SOURCE] = m[0];
                if (m[1] != 0) finals++;
            }
        }
    }
    if (p->rank == 0 && p->interval > 0) progress_print(p, 1);
    free(p->seen);
    free(p);
    *pp = NULL;
}
