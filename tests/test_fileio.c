/* test_fileio.c — pipeline/fileio.c and pipeline/hash.c: full reads/writes, truncation reported as
 * TQ_ERR_CORRUPT naming the file, errno mapping (ENOSPC -> TQ_ERR_NOSPACE, ENOENT -> TQ_ERR_NOTFOUND),
 * crash-safe replace (no temp file left, old content replaced atomically, abort leaves the old file),
 * mkdir -p, and the hash wrappers against published test vectors (SHA-256 "abc", XXH3-64 of "").
 * Plain C: prints FAILED lines, exits non-zero on any failure. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "hash.h"

#include "tq_check_status.h"

static int count_tmp(const char* dir)
{
    DIR* d = opendir(dir);
    int n = 0;
    struct dirent* e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

int main(void)
{
    char tmp[4096], p[4200], q[4300];
    const char* base = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/tq_fileio_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp)) return EXIT_FAILURE;

    /* atomic write, replace, read back */
    snprintf(p, sizeof p, "%s/a/b/c", tmp);
    CHECK(tq_mkdirs(p) == TQ_OK);
    CHECK(tq_mkdirs(p) == TQ_OK); /* exists: fine */
    snprintf(q, sizeof q, "%s/x.json", p);
    CHECK(tq_write_file_atomic(q, "first", 5) == TQ_OK);
    CHECK(tq_write_file_atomic(q, "second!", 7) == TQ_OK);
    char* data = NULL;
    size_t len = 0;
    CHECK(tq_read_file(q, &data, &len) == TQ_OK);
    CHECK(len == 7 && data && !strcmp(data, "second!"));
    free(data);
    CHECK(count_tmp(p) == 0);
    CHECK(tq_file_exists(q) && !tq_file_exists("/nonexistent/zz"));

    /* incremental atomic file: invisible until commit, abort keeps the old content */
    tq_atomic_file f;
    CHECK(tq_atomic_open(&f, q) == TQ_OK);
    CHECK(tq_pwrite_full(f.fd, "XYZ", 3, 2, f.tmp) == TQ_OK);
    CHECK(tq_pwrite_full(f.fd, "ab", 2, 0, f.tmp) == TQ_OK);
    CHECK(count_tmp(p) == 1);
    tq_atomic_abort(&f);
    CHECK(count_tmp(p) == 0);
    CHECK(tq_read_file(q, &data, &len) == TQ_OK && len == 7);
    free(data);
    CHECK(tq_atomic_open(&f, q) == TQ_OK);
    CHECK(tq_write_full(f.fd, "abXYZ", 5, f.tmp) == TQ_OK);
    CHECK(tq_atomic_commit(&f) == TQ_OK);
    CHECK(tq_read_file(q, &data, &len) == TQ_OK && len == 5 && !memcmp(data, "abXYZ", 5));
    free(data);

    /* pread_full: exact reads, truncation names the file */
    int fd = open(q, O_RDONLY);
    char buf[16];
    CHECK(tq_pread_full(fd, buf, 3, 2, q) == TQ_OK && !memcmp(buf, "XYZ", 3));
    CHECK(tq_pread_full(fd, buf, 4, 2, q) == TQ_ERR_CORRUPT);
    CHECK(strstr(tq_last_error(), "x.json") && strstr(tq_last_error(), "truncated"));
    close(fd);

    /* errors */
    snprintf(q, sizeof q, "%s/missing", tmp);
    CHECK(tq_read_file(q, &data, &len) == TQ_ERR_NOTFOUND && data == NULL);
    CHECK(strstr(tq_last_error(), "missing") != NULL);
    CHECK(tq_read_file(tmp, &data, &len) == TQ_ERR_ARG); /* a directory */
    CHECK(tq_errno_status(ENOSPC, "writing", "/x/y") == TQ_ERR_NOSPACE);
    CHECK(strstr(tq_last_error(), "/x/y") != NULL);
    CHECK(tq_errno_status(EDQUOT, "writing", "/x/y") == TQ_ERR_NOSPACE);
    CHECK(tq_errno_status(EIO, "reading", "/x/y") == TQ_ERR_IO);
    snprintf(q, sizeof q, "%s/a/b/c/x.json/sub", tmp); /* a file in the way */
    CHECK(tq_mkdirs(q) != TQ_OK);
    snprintf(q, sizeof q, "%s/nodir/x", tmp);
    CHECK(tq_write_file_atomic(q, "z", 1) == TQ_ERR_NOTFOUND);
    CHECK(tq_write_file_atomic("/proc/tq_cannot_write_here", "z", 1) != TQ_OK);

    /* hashes: published vectors */
    char hex[65];
    tq_sha256_buf("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    snprintf(q, sizeof q, "%s/abc", tmp);
    CHECK(tq_write_file_atomic(q, "abc", 3) == TQ_OK);
    CHECK(tq_sha256_file(q, hex) == TQ_OK);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    snprintf(q, sizeof q, "%s/nope", tmp);
    CHECK(tq_sha256_file(q, hex) == TQ_ERR_NOTFOUND);
    CHECK(tq_xxh64("", 0, 0) == 0x2D06800538D394C2ull);
    char xh[17];
    tq_xxh_hex(0x2D06800538D394C2ull, xh);
    CHECK(!strcmp(xh, "2d06800538d394c2"));
    /* streaming equals one shot, across odd chunk sizes */
    static unsigned char big[100000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 131u >> 3);
    tq_xxh_stream* s = tq_xxh_create();
    CHECK(s != NULL);
    for (size_t i = 0; i < sizeof big; i += 777) tq_xxh_update(s, big + i, sizeof big - i < 777 ? sizeof big - i : 777);
    CHECK(tq_xxh_digest(s) == tq_xxh64(big, sizeof big, 0));
    tq_xxh_free(&s);
    CHECK(s == NULL);
    tq_xxh_free(&s); /* NULL ok */
    CHECK(tq_xxh64(big, sizeof big, 1) != tq_xxh64(big, sizeof big, 0));

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmp);
    printf("%s: %d checks, %d failed\n", g_failed ? "FAILED" : "ok", g_checks, g_failed);
    return g_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
