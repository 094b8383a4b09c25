/* h5zstd.h — zstd as an HDF5 filter, registered by tqpipe itself (Debian ships no zstd filter).
 * Filter id 32015 (the id registered with The HDF Group for zstd) with the usual parameter
 * convention: cd_values[0] = compression level. Each chunk is one zstd frame that records its content
 * size, so h5py + hdf5plugin (and any HDF5 tool with a 32015 plugin) read tqpipe files, and tqpipe
 * reads theirs. The same source file also builds the loadable plugin library `h5z_zstd`
 * (compiled with -DTQ_H5Z_PLUGIN: exports H5PLget_plugin_type / H5PLget_plugin_info and calls no
 * HDF5 function), so `HDF5_PLUGIN_PATH=<build>/plugins h5dump file.tqa.h5` shows the data. */
#ifndef TQ_H5ZSTD_H
#define TQ_H5ZSTD_H

#include "status.h"

#define TQ_H5Z_ZSTD 32015

/* Register the filter with the HDF5 library of this process (idempotent, thread-unsafe like HDF5).
 * Also silences HDF5's automatic error stack printing: tqpipe reports HDF5 failures itself.
 * @return TQ_OK or TQ_ERR_HDF5. LOCAL. */
tq_status tq_h5zstd_register(void);

#endif
