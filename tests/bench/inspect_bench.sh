#!/usr/bin/env bash
# inspect_bench.sh — `tqpipe inspect --verify` read throughput per rank, from the page cache, against
# `cat FILES > /dev/null` on the same files in the same run (issue 2, Measure: goal >= 0.8 of cat).
#
# Data: a 122B-A10B-shaped synthetic checkpoint (tqpipe synth, jobs/configs/qwen3.5-122b-a10b.json,
# --scale 32: 37,599 bf16 tensors, ~334 MB in 4 files), made once and kept in $TQ_BENCH_DIR.
# Method: warm the page cache, then ROUNDS rounds, each running in turn
#   cat      one `cat FILES > /dev/null`
#   cat x2   two such cats at the same time (what each of 2 ranks competes with)
#   np1      mpirun -np 1 tqpipe inspect --verify --json   (default binding: one core per rank, so
#            --reader auto keeps everything in one thread: the like-for-like comparison with cat)
#   np2      mpirun -np 2 tqpipe inspect --verify --json
#   np1 rt   mpirun -np 1 --bind-to none ... --reader on: the rank may use a second core for the
#            reads (how a rank runs under srun -c 2); its CPU figure counts both threads
# Two figures per run, both bytes / time:
#   wall  cat: wall time of the process; inspect: each rank's own bytes / wall time of its verify loop
#         (read + XXH3 + NaN/Inf scan; MPI start and header parsing excluded, printed separately)
#   cpu   the same bytes / CPU time (user + system): cat from wait4() rusage, inspect from the rank's
#         thread CPU clock around the loop. On a shared machine the CPU figure is the stable one:
#         it is the throughput a rank gets with a core to itself.
# The median round of each is reported (best in brackets); the slowest rank counts for np2. The load
# average is printed before and after: on a shared machine rerun when it is above ~0.5.
#   usage: tests/bench/inspect_bench.sh [BUILD_DIR]   env: ROUNDS (7), SCALE (32), CHUNK, TQ_BENCH_DIR
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$here/build}" && pwd)
bin=$build/tqpipe
[ -x "$bin" ] || { echo "inspect_bench: $bin missing"; exit 2; }
command -v python3 >/dev/null || { echo "inspect_bench: needs python3"; exit 2; }
scale=${SCALE:-32}
dir=${TQ_BENCH_DIR:-/tmp/tq_bench}/synth122b-s$scale
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if [ ! -f "$dir/.complete" ]; then
    rm -rf "$dir"
    echo "making $dir (tqpipe synth --scale $scale) ..."
    "$bin" synth --config "$here/jobs/configs/qwen3.5-122b-a10b.json" --scale "$scale" --seed 1 \
        --shard-size 100M "$dir" >/dev/null || { echo "synth failed"; exit 1; }
    touch "$dir/.complete"
fi
echo "machine: $(nproc) cores, load average before $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
exec python3 - "$bin" "$dir" "${ROUNDS:-7}" "${CHUNK:-}" <<'PY'
import glob, json, os, statistics, subprocess, sys, time
binary, d, rounds, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
nbytes = sum(os.path.getsize(f) for f in files)
mpirun = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]
devnull = subprocess.DEVNULL

def spawn_cat():
    return subprocess.Popen(["cat"] + files, stdout=devnull), time.perf_counter()

def reap(p, t0):
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = 0  # reaped here
    assert os.waitstatus_to_exitcode(status) == 0, "cat failed"
    return time.perf_counter() - t0, ru.ru_utime + ru.ru_stime

for _ in range(2):  # warm the page cache
    reap(*spawn_cat())
res = {k: [] for k in ("cat", "cat2", "np1", "np2", "np1rt")}
wall_cmd = {"np1": [], "np2": [], "np1rt": []}
runs = (("np1", 1, []), ("np2", 2, []), ("np1rt", 1, ["--reader", "on"]))
for r in range(rounds):
    w, c = reap(*spawn_cat())
    res["cat"].append((nbytes / w, nbytes / c))
    a, b = spawn_cat(), spawn_cat()
    wa, ca = reap(*a)
    wb, cb = reap(*b)
    res["cat2"].append((nbytes / max(wa, wb), nbytes / max(ca, cb)))
    for key, np_, extra in runs:
        cmd = mpirun + ["-np", str(np_)] + (["--bind-to", "none"] if key == "np1rt" else [])
        cmd += [binary, "inspect", d, "--verify", "--json", "--progress", "0"] + extra
        if chunk:
            cmd += ["--chunk", chunk]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wall_cmd[key].append(time.perf_counter() - t0)
        if out.returncode != 0:
            sys.exit("inspect %s failed:\n%s" % (key, out.stderr))
        j = json.loads(out.stdout)
        v = j["verify"]
        assert v["ok"] and v["bytes"] == j["bytes"], "verify failed or did not read every tensor byte"
        pr = v["per_rank"]
        res[key].append((min(p["bytes"] / p["seconds"] for p in pr),
                         min(p["bytes"] / p["cpu_seconds"] for p in pr if p["cpu_seconds"] > 0)))

G = 1e9
def best(k, i): return max(x[i] for x in res[k])
def med(k, i): return statistics.median(x[i] for x in res[k])
print(f"inspect --verify vs cat: {len(files)} files, {nbytes/1e6:.1f} MB, page cache, median of {rounds} rounds [best]")
print(f"  {'':44s} {'wall GB/s':>16s} {'cpu GB/s':>16s}")
names = {"cat": "cat FILES > /dev/null", "cat2": "2 cats at once, slower one",
         "np1": "inspect --verify -np 1, per rank", "np2": "inspect --verify -np 2, per rank",
         "np1rt": "-np 1 --bind-to none --reader on, per rank"}
for k in ("cat", "cat2", "np1", "np2", "np1rt"):
    print(f"  {names[k]:44s} {med(k,0)/G:7.2f} [{best(k,0)/G:5.2f}] {med(k,1)/G:7.2f} [{best(k,1)/G:5.2f}]")
for k in ("np1", "np2", "np1rt"):
    print(f"  whole command {k} (mpirun start, headers, plan, verify, report): median {statistics.median(wall_cmd[k]):.2f} s")
for i, what in ((0, "wall"), (1, "cpu")):
    r1 = med("np1", i) / med("cat", i)
    r2 = med("np2", i) / med("cat2", i)
    r3 = med("np1rt", i) / med("cat", i)
    print(f"ratio ({what}, medians): np1 / cat = {r1:.2f}; np2 per rank / (cat x2 per cat) = {r2:.2f};"
          f" np1 reader thread / cat = {r3:.2f}   (goal >= 0.8)")
print("load average after " + " ".join(open("/proc/loadavg").read().split()[:3]))
PY
