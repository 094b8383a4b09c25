/* h5zstd.c — the zstd HDF5 filter (id 32015, cd_values[0] = level) and its registration; built into
 * tqcore and, with -DTQ_H5Z_PLUGIN, as the standalone plugin library h5z_zstd (see h5zstd.h).
 * The filter callback uses malloc/free for chunk buffers, as HDF5's own filters and the HDF Group
 * plugins do, and calls no HDF5 function, so the plugin needs no link to a particular libhdf5. */
#include <stdlib.h>

#include <hdf5.h>
#include <zstd.h>

#ifndef TQ_H5Z_PLUGIN
#include "h5zstd.h"
#else
#define TQ_H5Z_ZSTD 32015
#endif

/* Compress (flags without H5Z_FLAG_REVERSE) or decompress *buf (nbytes valid of *buf_size
 * allocated). Returns the new valid size, or 0 on failure (HDF5 then reports a filter error). */
static size_t tq_h5z_zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                                 size_t nbytes, size_t* buf_size, void** buf)
{
    if (flags & H5Z_FLAG_REVERSE) {
        unsigned long long const n = ZSTD_getFrameContentSize(*buf, nbytes);
        if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN) return 0;
        void* out = malloc(n ? (size_t)n : 1);
        if (!out) return 0;
        static _Thread_local ZSTD_DCtx* dctx = NULL;
        if (!dctx) dctx = ZSTD_createDCtx();
        size_t const got = dctx ? ZSTD_decompressDCtx(dctx, out, (size_t)n, *buf, nbytes) : (size_t)-1;
        if (ZSTD_isError(got) || got != n) {
            free(out);
            return 0;
        }
        free(*buf);
        *buf = out;
        *buf_size = (size_t)n ? (size_t)n : 1;
        return (size_t)n;
    }
    int level = cd_nelmts > 0 ? (int)cd_values[0] : 3;
    if (level > ZSTD_maxCLevel()) level = ZSTD_maxCLevel();
    size_t const cap = ZSTD_compressBound(nbytes);
    void* out = malloc(cap);
    if (!out) return 0;
    static _Thread_local ZSTD_CCtx* cctx = NULL; /* reused across chunks (kept until exit) */
    if (!cctx) cctx = ZSTD_createCCtx();
    size_t const got = cctx ? ZSTD_compressCCtx(cctx, out, cap, *buf, nbytes, level) : (size_t)-1;
    if (ZSTD_isError(got)) {
        free(out);
        return 0;
    }
    free(*buf);
    *buf = out;
    *buf_size = cap;
    return got;
}

static const H5Z_class2_t tq_h5z_zstd_class = {
    H5Z_CLASS_T_VERS,
    (H5Z_filter_t)TQ_H5Z_ZSTD,
    1, /* encoder present */
    1, /* decoder present */
    "zstd (tqpipe)",
    NULL, /* can_apply */
    NULL, /* set_local */
    tq_h5z_zstd_filter,
};

#ifdef TQ_H5Z_PLUGIN
/* ------------------------------------------------------------------------------------------------
 * Plugin entry points, found by HDF5 in $HDF5_PLUGIN_PATH. */
H5PL_type_t H5PLget_plugin_type(void);
const void* H5PLget_plugin_info(void);
H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void* H5PLget_plugin_info(void) { return &tq_h5z_zstd_class; }
#else
/* ------------------------------------------------------------------------------------------------ */
tq_status tq_h5zstd_register(void)
{
    static int done = 0;
    if (done) return TQ_OK;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Zregister(&tq_h5z_zstd_class) < 0)
        return tq_fail(TQ_ERR_HDF5, "cannot register the zstd HDF5 filter (id %d)", TQ_H5Z_ZSTD);
    done = 1;
    return TQ_OK;
}
#endif
