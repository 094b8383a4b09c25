/* fileio.c — POSIX file helpers shared by every reader and writer (see fileio.h).
 *
 * Why it is shaped this way:
 *  - Parallel file systems (Lustre, GPFS, NFS) return short reads/writes and EINTR/EAGAIN more often
 *    than local disks, so every transfer loops until complete, retrying transient errors a bounded
 *    number of times with a short sleep (the mpifileutils habit, MFU_IO_TRIES = 5).
 *  - Outputs are never written in place: data goes to "<path>.tmp.<pid>", is fsync'ed, renamed over the
 *    final name, and the directory is fsync'ed, so after a crash a file either exists complete or not
 *    at all (a half-written shard never passes for a finished one).
 *  - errno is mapped to tq_status once (ENOSPC/EDQUOT -> TQ_ERR_NOSPACE, ENOENT -> TQ_ERR_NOTFOUND)
 *    with a message naming the path. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// ------------------------------------------------------------------------------------------------
// errors and retries

#define TQ_IO_TRIES 5
#define TQ_IO_MAX_CHUNK ((size_t)1 << 30) /* one syscall moves at most 1 GiB (Linux caps at ~2 GiB) */

tq_status tq_errno_status(int err, const char* what, const char* path)
{
    tq_status s = TQ_ERR_IO;
    if (err == ENOSPC || err == EDQUOT) s = TQ_ERR_NOSPACE;
    else if (err == ENOENT || err == ENOTDIR) s = TQ_ERR_NOTFOUND;
    else if (err == ENOMEM) s = TQ_ERR_NOMEM;
    const char* hint = "";
    if (s == TQ_ERR_NOSPACE) hint = " (free space or raise the quota, then rerun)";
    else if (err == EACCES || err == EPERM) hint = " (check the permissions)";
    else if (s == TQ_ERR_NOTFOUND) hint = " (check the path)";
    return tq_fail(s, "%s %s: %s%s", what ? what : "I/O on", path ? path : "(unnamed file)", strerror(err), hint);
}

static int tq_io_transient(int err) { return err == EINTR || err == EAGAIN || err == EBUSY || err == ETIMEDOUT; }

static void tq_io_backoff(int attempt) { usleep((useconds_t)(1000u << (attempt < 8 ? attempt : 8))); }

// ------------------------------------------------------------------------------------------------
// full reads and writes

tq_status tq_pread_full(int fd, void* buf, size_t n, uint64_t off, const char* path)
{
    char* p = (char*)buf;
    size_t done = 0;
    int tries = 0;
    while (done < n) {
        size_t want = n - done;
        if (want > TQ_IO_MAX_CHUNK) want = TQ_IO_MAX_CHUNK;
        ssize_t r = pread(fd, p + done, want, (off_t)(off + done));
        if (r < 0) {
            int err = errno;
            if (err == EINTR) continue; /* interrupted: not a failure, no budget used */
            if (tq_io_transient(err) && ++tries < TQ_IO_TRIES) {
                tq_io_backoff(tries);
                continue;
            }
            return tq_errno_status(err, "reading", path);
        }
        if (r == 0) {
            return tq_fail(TQ_ERR_CORRUPT,
                           "%s: truncated: needed %zu bytes at offset %llu but the file ends after %llu bytes"
                           " (the file is incomplete: copy or download it again)",
                           path ? path : "(unnamed file)", n, (unsigned long long)off,
                           (unsigned long long)(off + done));
        }
        done += (size_t)r;
        tries = 0;
    }
    return TQ_OK;
}

/* The write loop of tq_pwrite_full (positional: pwrite at off + done) and tq_write_full (write at the
 * descriptor's position): retries short writes and transient errors; a write that keeps returning 0 is
 * reported as ENOSPC. */
static tq_status tq_write_loop(int fd, const void* buf, size_t n, int positional, uint64_t off, const char* path)
{
    const char* p = (const char*)buf;
    size_t done = 0;
    int tries = 0;
    while (done < n) {
        size_t want = n - done;
        if (want > TQ_IO_MAX_CHUNK) want = TQ_IO_MAX_CHUNK;
        ssize_t r = positional ? pwrite(fd, p + done, want, (off_t)(off + done)) : write(fd, p + done, want);
        if (r < 0) {
            int err = errno;
            if (err == EINTR) continue;
            if (tq_io_transient(err) && ++tries < TQ_IO_TRIES) {
                tq_io_backoff(tries);
                continue;
            }
            return tq_errno_status(err, "writing", path);
        }
        if (r == 0) {
            if (++tries < TQ_IO_TRIES) {
                tq_io_backoff(tries);
                continue;
            }
            return tq_errno_status(ENOSPC, "writing", path);
        }
        done += (size_t)r;
        tries = 0;
    }
    return TQ_OK;
}

tq_status tq_pwrite_full(int fd, const void* buf, size_t n, uint64_t off, const char* path)
{
    return tq_write_loop(fd, buf, n, 1, off, path);
}

tq_status tq_write_full(int fd, const void* buf, size_t n, const char* path)
{
    return tq_write_loop(fd, buf, n, 0, 0, path);
}

// ------------------------------------------------------------------------------------------------
// small whole files

tq_status tq_read_file(const char* path, char** out, size_t* len)
{
    if (!path || !out) return tq_fail(TQ_ERR_ARG, "tq_read_file: NULL argument");
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tq_errno_status(errno, "opening", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return tq_errno_status(err, "stat of", path);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return tq_fail(TQ_ERR_ARG, "%s is a directory, expected a file", path);
    }
    /* This helper is for configs, manifests, headers: refuse absurd sizes rather than exhaust memory. */
    const uint64_t max_small = (uint64_t)1 << 31;
    if ((uint64_t)st.st_size > max_small) {
        close(fd);
        return tq_fail(TQ_ERR_FORMAT, "%s is %lld bytes, too large for a configuration/manifest file",
                       path, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    char* buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return tq_fail(TQ_ERR_NOMEM, "no memory to read %s (%zu bytes)", path, n);
    }
    tq_status rc = tq_pread_full(fd, buf, n, 0, path);
    close(fd);
    if (rc != TQ_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// crash-safe writes

static tq_status tq_fsync_fd(int fd, const char* path)
{
    for (int t = 0; t < TQ_IO_TRIES; t++) {
        if (fsync(fd) == 0) return TQ_OK;
        int err = errno;
        if (err == EINVAL || err == EROFS) return TQ_OK; /* special files / fs without fsync */
        if (!tq_io_transient(err)) return tq_errno_status(err, "fsync of", path);
        tq_io_backoff(t);
    }
    return tq_errno_status(EIO, "fsync of", path);
}

/* fsync the directory that holds path so the rename itself is durable. */
static tq_status tq_fsync_parent(const char* path)
{
    char dir[4096];
    size_t n = strlen(path);
    if (n >= sizeof dir) return tq_fail(TQ_ERR_ARG, "path too long: %s", path);
    memcpy(dir, path, n + 1);
    char* slash = strrchr(dir, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return tq_errno_status(errno, "opening directory", dir);
    tq_status rc = tq_fsync_fd(fd, dir);
    close(fd);
    return rc;
}

static tq_status tq_tmp_name(char* tmp, size_t cap, const char* path)
{
    int k = snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    if (k < 0 || (size_t)k >= cap) return tq_fail(TQ_ERR_ARG, "path too long: %s", path);
    return TQ_OK;
}

tq_status tq_commit_rename(const char* tmp, const char* path)
{
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tq_errno_status(errno, "opening", tmp);
    tq_status rc = tq_fsync_fd(fd, tmp);
    close(fd);
    if (rc != TQ_OK) return rc;
    if (rename(tmp, path) != 0) return tq_errno_status(errno, "renaming temp file into", path);
    return tq_fsync_parent(path);
}

tq_status tq_write_file_atomic(const char* path, const void* data, size_t len)
{
    tq_atomic_file f;
    TQ_FORWARD(tq_atomic_open(&f, path));
    tq_status rc = tq_write_full(f.fd, data, len, f.tmp);
    if (rc != TQ_OK) {
        tq_atomic_abort(&f);
        return rc;
    }
    return tq_atomic_commit(&f);
}

tq_status tq_atomic_open(tq_atomic_file* f, const char* path)
{
    if (!f || !path) return tq_fail(TQ_ERR_ARG, "tq_atomic_open: NULL argument");
    f->fd = -1;
    size_t n = strlen(path);
    if (n >= sizeof f->path) return tq_fail(TQ_ERR_ARG, "path too long: %s", path);
    memcpy(f->path, path, n + 1);
    TQ_FORWARD(tq_tmp_name(f->tmp, sizeof f->tmp, path));
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) return tq_errno_status(errno, "creating", f->tmp);
    return TQ_OK;
}

tq_status tq_atomic_commit(tq_atomic_file* f)
{
    if (!f || f->fd < 0) return tq_fail(TQ_ERR_ARG, "tq_atomic_commit: file not open");
    tq_status rc = tq_fsync_fd(f->fd, f->tmp);
    if (close(f->fd) != 0 && rc == TQ_OK) rc = tq_errno_status(errno, "closing", f->tmp);
    f->fd = -1;
    if (rc != TQ_OK) {
        unlink(f->tmp);
        return rc;
    }
    if (rename(f->tmp, f->path) != 0) {
        rc = tq_errno_status(errno, "renaming temp file into", f->path);
        unlink(f->tmp);
        return rc;
    }
    return tq_fsync_parent(f->path);
}

void tq_atomic_abort(tq_atomic_file* f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp[0]) unlink(f->tmp);
}

// ------------------------------------------------------------------------------------------------
// directories

tq_status tq_mkdirs(const char* path)
{
    if (!path || !*path) return tq_fail(TQ_ERR_ARG, "tq_mkdirs: empty path");
    char buf[4096];
    size_t n = strlen(path);
    if (n >= sizeof buf) return tq_fail(TQ_ERR_ARG, "path too long: %s", path);
    memcpy(buf, path, n + 1);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0';
    for (char* p = buf + 1; ; p++) {
        char c = *p;
        if (c == '/' || c == '\0') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) return tq_errno_status(errno, "creating directory", buf);
            struct stat st;
            if (stat(buf, &st) != 0) return tq_errno_status(errno, "stat of", buf);
            if (!S_ISDIR(st.st_mode)) return tq_fail(TQ_ERR_IO, "%s exists and is not a directory", buf);
            *p = c;
        }
        if (c == '\0') break;
    }
    return TQ_OK;
}

int tq_file_exists(const char* path)
{
    struct stat st;
    return path && stat(path, &st) == 0;
}
