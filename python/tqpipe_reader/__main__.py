"""python3 -m tqpipe_reader ARTIFACT_DIR [TENSOR [OUT.npy]]: list the tensors of a tqpipe artifact, or
dequantize one (prints a summary, or saves it as .npy)."""
import sys

import numpy as np

import tqpipe_reader


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    with tqpipe_reader.open(argv[1]) as art:
        if len(argv) == 2:
            for name in art.names():
                t = art.info(name)
                print("%-60s %-6s g%-3d %-14s %-10s %d bytes" % (name, t["codec"], t["group_size"],
                                                                 "x".join(map(str, t["shape"])), t["role"], t["bytes"]))
            return 0
        w = art.dequantize(argv[2])
        if len(argv) > 3:
            np.save(argv[3], w)
        print("%s: shape %s, mean %.6g, std %.6g, min %.6g, max %.6g" % (argv[2], w.shape, w.mean(), w.std(),
                                                                        w.min(), w.max()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
