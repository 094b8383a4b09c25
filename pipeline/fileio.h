/* fileio.h — POSIX file helpers every writer and reader shares: full pread/pwrite loops with bounded
 * retries (parallel file systems return short or EINTR'd I/O), crash-safe writes (temp name, fsync,
 * rename, fsync of the directory) so a half-written file never passes for a complete one, and
 * mapping of errno to tq_status (ENOSPC/EDQUOT -> TQ_ERR_NOSPACE) with messages naming the path. */
#ifndef TQ_FILEIO_H
#define TQ_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "status.h"

/* Read exactly n bytes at off; short file -> TQ_ERR_CORRUPT ("truncated"), naming path. */
tq_status tq_pread_full(int fd, void* buf, size_t n, uint64_t off, const char* path);
tq_status tq_pwrite_full(int fd, const void* buf, size_t n, uint64_t off, const char* path);
tq_status tq_write_full(int fd, const void* buf, size_t n, const char* path);

/* Whole small file (configs, manifests, headers) into a NUL-terminated malloc'd buffer. */
tq_status tq_read_file(const char* path, char** out, size_t* len);

/* Atomic replace: write data to "<path>.tmp.<pid>", fsync, rename over path, fsync the directory. */
tq_status tq_write_file_atomic(const char* path, const void* data, size_t len);

/* For large outputs written incrementally (shards): open "<path>.tmp.<pid>" for writing;
 * commit = fsync + close + rename + fsync(dir); abort = close + unlink. */
typedef struct {
    int fd;
    char path[4096];
    char tmp[4096];
} tq_atomic_file;
tq_status tq_atomic_open(tq_atomic_file* f, const char* path);
tq_status tq_atomic_commit(tq_atomic_file* f);
void tq_atomic_abort(tq_atomic_file* f);
/* Rename an already written temp file into place durably (fsync file, rename, fsync dir). */
tq_status tq_commit_rename(const char* tmp, const char* path);

/* mkdir -p (mode 0755). */
tq_status tq_mkdirs(const char* path);
int tq_file_exists(const char* path);
/* errno -> status with message "<what> <path>: <strerror>" */
tq_status tq_errno_status(int err, const char* what, const char* path);

#endif
