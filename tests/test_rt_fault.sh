#!/usr/bin/env bash
# test_rt_fault.sh — a failure on one rank ends the whole MPI job quickly with a non-zero exit, never
# a hang, under mpirun -np 2 and -np 4:
#   fail:R   rank R returns an error -> every rank prints "rank R: <message>" and exits 1 (agreement,
#            with the early notice so busy ranks stop within one work item)
#   kill:R   rank R is SIGKILLed            -> mpirun tears the job down, exits non-zero
#   exit:R   rank R _exit(3)s without MPI_Finalize -> same
#   abort:R  rank R calls tq_rt_abort       -> MPI_Abort, exit code = the status (80)
#   fail:1 while the other rank never polls -> the failing rank aborts after TQ_AGREE_TIMEOUT
# Also checks the progress lines of a clean run (rate, ETA, final 100% line).
# The job would take 20 s without faults; each faulty run must end in under 12 s (timeout 60).
# usage: test_rt_fault.sh PATH/rt_fault_prog [MPIRUN]
set -u
prog=${1:?usage: test_rt_fault.sh rt_fault_prog [mpirun]}
mpirun=${2:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAILED: $*"; fails=$((fails + 1)); }

run() { # np fault units ms k [nopoll] -> sets rc, secs; output in $tmp/out, $tmp/err
    local np=$1 fault=$2 units=$3 ms=$4 k=$5 t0 t1
    t0=$(date +%s.%N)
    TQ_FAULT_RT=$fault TQ_AGREE_TIMEOUT=${AGREE_TIMEOUT:-30} timeout 60 "$mpirun" --allow-run-as-root --oversubscribe \
        --mca btl_vader_single_copy_mechanism none -np "$np" "$prog" "$units" "$ms" "$k" ${6:-} >"$tmp/out" 2>"$tmp/err"
    rc=$?
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
}

for np in 2 4; do
    # clean run: every rank ok, progress lines with rate and ETA, then the final line
    run "$np" "" 40 25 -1
    [ "$rc" = 0 ] || fail "np=$np clean run exit $rc"
    [ "$(grep -c 'RESULT .* status=0 ' "$tmp/out")" = "$np" ] || fail "np=$np clean: not every rank ok"
    grep -Eq '\[r0\] INFO  processed [0-9.]+ MB \([0-9]+%\) in [0-9.]+ s \([0-9.]+ MB/s\), [0-9.]+ s left' "$tmp/err" ||
        fail "np=$np: no progress line with ETA"
    total_mb=$((40 * np))
    grep -Eq "\[r0\] INFO  processed ${total_mb}\.0 MB \(100%\) in [0-9.]+ s \([0-9.]+ MB/s\), done" "$tmp/err" ||
        fail "np=$np: no final progress line with ${total_mb}.0 MB (100%)"
    if grep -q '\[r[1-9]\] INFO  processed' "$tmp/err"; then fail "np=$np: progress printed by a rank other than 0"; fi
    echo "np=$np clean: ok (${secs} s)"

    for r in 1 $((np - 1)); do
        run "$np" "fail:$r" 2000 10 5
        n=$(grep -c "RESULT rank=[0-9]* status=80 error=rank $r: injected failure at unit 5" "$tmp/out")
        [ "$rc" != 0 ] || fail "np=$np fail:$r: mpirun exit 0"
        [ "$n" = "$np" ] || { fail "np=$np fail:$r: $n of $np ranks report the agreed error"; cat "$tmp/out"; }
        awk -v s="$secs" 'BEGIN { exit !(s < 12) }' || fail "np=$np fail:$r took $secs s"
        echo "np=$np fail:$r: exit $rc, $n ranks report 'rank $r: injected failure', ${secs} s"
    done

    for f in kill:1 exit:1 abort:1 kill:0; do
        run "$np" "$f" 2000 10 5
        [ "$rc" != 0 ] || fail "np=$np $f: mpirun exit 0"
        [ "$rc" != 124 ] || fail "np=$np $f: hang (timeout)"
        awk -v s="$secs" 'BEGIN { exit !(s < 12) }' || fail "np=$np $f took $secs s"
        if grep -q 'status=0 ' "$tmp/out"; then fail "np=$np $f: a rank reported success"; fi
        echo "np=$np $f: exit $rc, ${secs} s"
    done
    run "$np" abort:1 2000 10 5
    [ "$rc" = 80 ] || fail "np=$np abort:1: exit $rc, expected 80 (TQ_ERR_INJECTED)"
    grep -q 'ERROR .*aborting the job (injected fault): injected abort at unit 5' "$tmp/err" || fail "np=$np abort: no log line"
done

# A rank fails while the others are busy and never poll for failures (20 s of work): the failing rank
# gives up waiting for the agreement after TQ_AGREE_TIMEOUT=2 s and aborts the job.
AGREE_TIMEOUT=2 run 2 fail:1 2000 10 5 nopoll
[ "$rc" != 0 ] || fail "agree timeout: mpirun exit 0"
awk -v s="$secs" 'BEGIN { exit !(s < 12) }' || fail "agree timeout took $secs s"
grep -q 'did not join the error agreement within 2 s' "$tmp/err" || fail "agree timeout: no abort message"
echo "np=2 fail:1 nopoll, TQ_AGREE_TIMEOUT=2: exit $rc, ${secs} s"

if [ "$fails" != 0 ]; then
    echo "test_rt_fault: $fails failure(s)"
    exit 1
fi
echo "test_rt_fault: ok"
