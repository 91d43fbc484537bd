#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for lrexp's SLURM tests and for trying the
# lrexp_slurm launcher: slurmctld and slurmd on 127.0.0.1, one partition, munge for auth.
#
#   sudo scripts/slurm_local.sh start    # install (apt, only if missing), configure, start
#   sudo scripts/slurm_local.sh status   # sinfo and the queue
#   sudo scripts/slurm_local.sh stop     # cancel jobs, stop the daemons, kill leftover jobs
#
# Root, no systemd, no cgroups: ProctrackType=proctrack/linuxproc and TaskPlugin=task/none.
# No accounting (no slurmdbd): sacct does not work here; squeue and scontrol do.
# OverTimeLimit=0: a job is stopped at its time limit (SLURM checks about every 30 s).
# KillWait=30 (SLURM's default): a stopped job gets 30 s between SIGTERM and SIGKILL to record
# what it has (5 s was too short for 11 000 points sent to MLflow on a 2-core machine).
# Idempotent: start on a running cluster only resumes a drained node; stop on a stopped one does
# nothing. start writes /etc/slurm/slurm.conf only if it is absent or carries this script's mark,
# and stop and status touch only a cluster whose conf carries it. A slurmctld that start launches
# forgets the jobs of earlier runs (-c). stop kills only this cluster's processes (by
# SLURM_CLUSTER_NAME and SLURM_CONF), and munged only if start launched it.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by lrexp scripts/slurm_local.sh"
CLUSTER=lrexp-local
LOG_DIR=/var/log/slurm
PARTITION=debug
MUNGED_PIDFILE=/run/munge/munged.pid
MUNGED_STATE=/run/lrexp-slurm-local.munged  # the pid of the munged that start launched
# the clients (sinfo, scontrol, scancel) must talk to this cluster whatever the caller's SLURM_CONF
export SLURM_CONF=$CONF

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

ours() { [ -f "$CONF" ] && grep -qF "$MARK" "$CONF"; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && return
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null; }
}

write_config() {
  if [ -f "$CONF" ] && ! ours; then
    die "$CONF exists and was not written by this script; not touching it"
  fi
  local node cpus mem_mb
  node=$(hostname -s)
  cpus=$(nproc)
  # leave 1 GiB to the system; jobs that ask for more memory than this are refused
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
  cat >"$CONF" <<EOC
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=30
OverTimeLimit=0
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOC
}

is_proc() {  # pid name: a live process of that name (a zombie is not; an init may reap late)
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] \
    && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# pidfile name: the pid in it runs that daemon (a stale pidfile's pid may have been reused)
pid_alive() { is_proc "$(cat "$1" 2>/dev/null)" "$2"; }

start_munge() {
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  pid_alive "$MUNGED_PIDFILE" munged && return
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 1 10); do pid_alive "$MUNGED_PIDFILE" munged && break; sleep 0.5; done
  pid_alive "$MUNGED_PIDFILE" munged || die "munged did not start"
  # stop stops munged only if it was launched here: a munged that ran before may serve others
  cat "$MUNGED_PIDFILE" >"$MUNGED_STATE"
}

start_daemon() {  # name [args]; runs in the foreground (-D) under nohup, logs to LOG_DIR
  pid_alive "/run/$1.pid" "$1" && return
  nohup "/usr/sbin/$1" -D "${@:2}" >>"$LOG_DIR/$1.out" 2>&1 &
}

wait_idle() {
  local node state deadline=$((SECONDS + 30))
  node=$(hostname -s)
  while [ "$SECONDS" -lt "$deadline" ]; do
    # timeout: a client waits MessageTimeout (10 s) for a controller that does not answer
    state=$(timeout 5 sinfo -h -n "$node" -o %T 2>/dev/null || true)
    # no "*": a node that does not respond yet gets no jobs
    if grep -qxE '(idle|mixed|allocated)' <<<"$state"; then return; fi
    # a node left drained or down (by an earlier unclean stop, or by hand) never becomes idle
    # by itself
    if grep -qE '^(drain|down|fail)' <<<"$state"; then
      timeout 5 scontrol update nodename="$node" state=resume 2>/dev/null || true
    fi
    sleep 0.5
  done
  timeout 5 sinfo 2>&1 || true
  tail -5 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
  die "the node did not come up within 30 s"
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
  install_packages
  write_config
  start_munge
  # -c: no jobs from the saved state of an aborted earlier run (they would start and take the
  # CPUs); a running slurmctld is left as it is, with its jobs
  start_daemon slurmctld -c
  start_daemon slurmd
  wait_idle
  echo "SLURM is up: partition $PARTITION, $(nproc) CPUs on $(hostname -s)"
}

stop_daemon() {  # name: TERM, then KILL after 10 s
  local pid
  pid_alive "/run/$1.pid" "$1" || return 0
  pid=$(cat "/run/$1.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true  # it may have exited in between
  for _ in $(seq 1 20); do is_proc "$pid" "$1" || return 0; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
}

ancestors() {  # this shell and its ancestors: stop may run inside one of this cluster's jobs
  local pid=$$
  while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
    echo "$pid"
    pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  done
}

kill_job_leftovers() {
  # proctrack/linuxproc loses track of a job's children that outlive it. A job's processes carry
  # SLURM_CLUSTER_NAME (ClusterName in the conf); slurmstepd, whose environment it rewrites, keeps
  # SLURM_CONF (the conf it read, ours) and is the parent of the job's first process.
  local jobs stepds keep pid
  jobs=$(grep -lzxF "SLURM_CLUSTER_NAME=$CLUSTER" /proc/[0-9]*/environ 2>/dev/null \
    | cut -d/ -f3 || true)
  stepds=$(
    for pid in $(pgrep -x slurmstepd || true); do
      if grep -qzxF "SLURM_CONF=$CONF" "/proc/$pid/environ" 2>/dev/null \
        || pgrep -P "$pid" | grep -qxF "$jobs"; then
        echo "$pid"
      fi
    done
  )
  keep=$(ancestors)
  for pid in $stepds $jobs; do
    grep -qxF "$pid" <<<"$keep" || kill -9 "$pid" 2>/dev/null || true
  done
}

stop_munge() {  # only the munged that start launched
  [ -f "$MUNGED_STATE" ] || return 0
  local pid
  pid=$(cat "$MUNGED_STATE")
  if [ "$(cat "$MUNGED_PIDFILE" 2>/dev/null)" = "$pid" ] && is_proc "$pid" munged; then
    kill "$pid" 2>/dev/null || true
  fi
  rm -f "$MUNGED_STATE"
}

stop() {
  # a conf without the mark belongs to another SLURM: cancelling its jobs or stopping its daemons
  # is not ours to do
  if [ ! -f "$CONF" ]; then echo "SLURM is stopped (no $CONF)"; return; fi
  ours || die "$CONF was not written by this script; not stopping that cluster"
  if pid_alive /run/slurmctld.pid slurmctld; then
    scancel --partition="$PARTITION" --full 2>/dev/null || true
    sleep 1
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  kill_job_leftovers
  stop_munge
  echo "SLURM is stopped"
}

status() {
  if [ -f "$CONF" ] && ! ours; then
    echo "slurm_local.sh: $CONF was not written by this script; not lrexp's cluster" >&2
    return 3
  fi
  if ! pid_alive /run/slurmctld.pid slurmctld; then echo "SLURM is not running"; return 3; fi
  sinfo
  squeue
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
