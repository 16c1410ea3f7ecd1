#!/usr/bin/env bash
# A one-node SLURM on localhost for tests, CI and trying lensdask's batch scripts: Debian's
# munge, slurmctld and slurmd (deploy/system-packages.sh slurm), started directly (no systemd)
# as root, with every file in DIR.
#
#   deploy/slurm/local-cluster.sh start DIR   write DIR/slurm.conf and a munge key, start
#                                             munged, slurmctld and slurmd, wait until the node
#                                             takes jobs; prints `export SLURM_CONF=DIR/slurm.conf`
#   deploy/slurm/local-cluster.sh stop DIR    cancel every job, then stop the three daemons by
#                                             the PIDs recorded in DIR/*.pid
#
# Point the SLURM commands at it with SLURM_CONF=DIR/slurm.conf (nothing under /etc changes).
# The controller listens on 127.0.0.1 only. Ports: $SLURM_LOCAL_PORT and the next one
# (default: two free ones). The node line comes from `slurmd -C`, its RealMemory lowered to
# 90% of the machine's so that slurmd never drains the node for having less than configured.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action="$1"
dir="$(mkdir -p "$2" && cd "$2" && pwd)"
conf="$dir/slurm.conf"

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

free_port_pair() {
  # Two consecutive free TCP ports on 127.0.0.1 (slurmctld and slurmd).
  python3 - <<'EOF'
import socket
for base in range(20000, 40000, 7):
    try:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", base))
            b.bind(("127.0.0.1", base + 1))
    except OSError:
        continue
    print(base)
    break
EOF
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq $((seconds * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "local-cluster.sh: $what did not happen within ${seconds}s; logs in $dir/log" >&2
  return 1
}

start() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "local-cluster.sh: needs root (the daemons run as root)" >&2
    exit 3
  fi
  for binary in munged slurmctld slurmd sbatch scontrol; do
    command -v "$binary" >/dev/null 2>&1 || {
      echo "local-cluster.sh: $binary not found (deploy/system-packages.sh slurm)" >&2
      exit 3
    }
  done
  if pid_alive "$dir/slurmctld.pid"; then
    echo "local-cluster.sh: already running in $dir" >&2
    exit 1
  fi
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 0700 "$dir" "$dir/munge"

  # munge: a fresh key, the socket in DIR (the SLURM daemons and commands find it via AuthInfo).
  rm -f "$dir/munge/munge.key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$dir/munge/munge.key" --force
  else
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  fi
  chmod 0400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed"
  wait_for 10 "munged start" test -S "$dir/munge/munge.socket"

  local host port node memory
  host="$(hostname -s)"
  port="${SLURM_LOCAL_PORT:-$(free_port_pair)}"
  node="$(slurmd -C | head -n 1)"
  memory="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
  node="$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$node")"
  cat >"$conf" <<EOF
# One-node SLURM written by deploy/slurm/local-cluster.sh
ClusterName=lensdask-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
DefMemPerCPU=1024
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$conf"
  slurmctld -f "$conf"
  wait_for 20 "slurmctld start" scontrol ping
  slurmd -f "$conf"
  wait_for 30 "the node coming up" node_idle "$host"
  echo "export SLURM_CONF=$conf"
}

node_idle() {
  local state
  state="$(scontrol show node "$1" | sed -n 's/.*State=\([A-Z+_]*\).*/\1/p')"
  [[ "$state" == IDLE* || "$state" == MIXED* || "$state" == ALLOCATED* ]]
}

stop_pids() {  # stop_pids PIDFILE...: TERM all, wait up to 10 s for them, then KILL
  local file pid pids=()
  for file in "$@"; do
    [ -f "$file" ] || continue
    pid="$(cat "$file")"
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$file"
  done
  for _ in $(seq 50); do
    local running=0
    for pid in ${pids[@]+"${pids[@]}"}; do
      kill -0 "$pid" 2>/dev/null && running=1
    done
    [ "$running" -eq 0 ] && return 0
    sleep 0.2
  done
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

stop() {
  export SLURM_CONF="$conf"
  if pid_alive "$dir/slurmctld.pid"; then
    # Cancel every job and wait for their steps to end while slurmd can still kill them.
    scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(squeue --noheader --format=%i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  stop_pids "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
