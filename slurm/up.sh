#!/bin/bash
# up.sh — bring up a single-host Slurm cluster (munged + slurmctld + slurmd) for tests and demos,
# everything under one state folder, no systemd, no cgroups, stopped by pid files (slurm/down.sh).
#   eval "$(slurm/up.sh [STATE_DIR])"      # default STATE_DIR: /tmp/tqpipe-slurm; exports SLURM_CONF
#   tqpipe submit jobs/stories260k.yaml; tqpipe status runs/stories260k
#   slurm/down.sh [STATE_DIR]
# Needs root (slurmd runs jobs as their user), ports 6817/6818 free, and the Debian packages
# munge slurmctld slurmd slurm-client. Settings from ../shared/ENVIRONMENT.md (seen working here):
# proctrack/linuxproc, task/none, no accounting, cons_tres CR_Core, sched_interval=1, MpiDefault=pmix,
# cred_expire=5 (fast requeue), CPUs=4 via config_overrides so a 2-core machine takes 4-task jobs.
# Prints only the export line on stdout; progress goes to stderr. Exit 77 when Slurm is not installed.
set -eu
D=${1:-/tmp/tqpipe-slurm}
CPUS=${TQ_SLURM_CPUS:-4}
MEM=$(awk '/MemTotal/{print int($2/1024*0.9)}' /proc/meminfo)
for b in munged slurmctld slurmd sbatch sinfo; do
  command -v $b >/dev/null 2>&1 || [ -x /usr/sbin/$b ] || { echo "up.sh: $b not installed (apt-get install munge slurmctld slurmd slurm-client)" >&2; exit 77; }
done
export PATH=$PATH:/usr/sbin
if [ "$(id -u)" != 0 ]; then echo "up.sh: must run as root (slurmd starts jobs as their owner)" >&2; exit 1; fi
if [ -f "$D/slurmctld.pid" ] && kill -0 "$(cat "$D/slurmctld.pid")" 2>/dev/null; then
  echo "up.sh: already running in $D" >&2
  echo "export SLURM_CONF=$D/slurm.conf"
  exit 0
fi
mkdir -p "$D"/{state,spool,log}
chmod 700 "$D"
# munge: own key, socket, pid, log and seed files
if [ ! -f "$D/munge.key" ]; then
  if command -v mungekey >/dev/null 2>&1 || [ -x /usr/sbin/mungekey ]; then mungekey -c -k "$D/munge.key" 2>/dev/null || true; fi
  [ -s "$D/munge.key" ] || dd if=/dev/urandom of="$D/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "$D/munge.key"
munged --force --socket="$D/munge.sock" --key-file="$D/munge.key" --pid-file="$D/munged.pid" \
  --log-file="$D/log/munged.log" --seed-file="$D/munge.seed" >&2
HOST=$(hostname -s)
cat > "$D/slurm.conf" <<CONF
# single-host test cluster written by tqpipe slurm/up.sh
ClusterName=tqlocal
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge.sock,cred_expire=5
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=pmix
ReturnToService=2
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF=$D/slurm.conf
slurmctld -f "$SLURM_CONF" -i >&2
slurmd -f "$SLURM_CONF" >&2
# wait for the node to be idle
for i in $(seq 1 150); do
  st=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
  case "$st" in idle*|mix*|alloc*) break ;; esac
  sleep 0.2
done
st=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
case "$st" in
  idle*|mix*|alloc*) echo "up.sh: Slurm up in $D (node $HOST $st, $CPUS CPUs)" >&2 ;;
  *) echo "up.sh: node $HOST did not become idle (state '$st'); logs in $D/log" >&2; exit 1 ;;
esac
echo "export SLURM_CONF=$D/slurm.conf"
