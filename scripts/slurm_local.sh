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
# what it has; a job that ends sooner is not held up by it. 5 s was too short for a job that had
# 11 000 points to send to MLflow on this 2-core machine. Idempotent: start on a running cluster, or stop on a
# stopped one, does nothing. It writes /etc/slurm/slurm.conf only if that file is absent or was
# written by this script.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by lrexp scripts/slurm_local.sh"
LOG_DIR=/var/log/slurm
PARTITION=debug

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && return
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null; }
}

write_config() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching it"
  fi
  local node cpus mem_mb
  node=$(hostname -s)
  cpus=$(nproc)
  # leave 1 GiB to the system; jobs that ask for more memory than this are refused
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
  cat >"$CONF" <<EOF
$MARK
ClusterName=lrexp-local
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
EOF
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  pid_alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
}

start_daemon() {  # name; runs in the foreground (-D) under nohup, logs to LOG_DIR
  pid_alive "/run/$1.pid" && return
  nohup "/usr/sbin/$1" -D >>"$LOG_DIR/$1.out" 2>&1 &
}

wait_idle() {
  local i
  for i in $(seq 1 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then return; fi
    sleep 0.5
  done
  sinfo 2>&1 || true
  tail -5 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
  die "the node did not come up within 30 s"
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"
  install_packages
  write_config
  start_munge
  start_daemon slurmctld
  start_daemon slurmd
  wait_idle
  # a node left "down" or "drained" by an earlier unclean stop
  scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
  echo "SLURM is up: partition $PARTITION, $(nproc) CPUs on $(hostname -s)"
}

stop_daemon() {  # name: TERM, then KILL after 10 s
  local pidfile="/run/$1.pid" i
  pid_alive "$pidfile" || return 0
  kill "$(cat "$pidfile")"
  for i in $(seq 1 20); do pid_alive "$pidfile" || return 0; sleep 0.5; done
  kill -9 "$(cat "$pidfile")" 2>/dev/null || true
}

kill_job_leftovers() {
  # proctrack/linuxproc loses track of a job's children that outlive it: kill every process
  # whose environment names a SLURM job (they were started by slurmstepd).
  local pid
  for pid in $(grep -lz '^SLURM_JOB_ID=' /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    [ "$pid" = "$$" ] || kill -9 "$pid" 2>/dev/null || true
  done
  pkill -9 -x slurmstepd 2>/dev/null || true
}

stop() {
  if pid_alive /run/slurmctld.pid; then
    scancel --user=root --full 2>/dev/null || true
    sleep 1
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  kill_job_leftovers
  if pid_alive /run/munge/munged.pid; then kill "$(cat /run/munge/munged.pid)"; fi
  echo "SLURM is stopped"
}

status() {
  if ! pid_alive /run/slurmctld.pid; then echo "SLURM is not running"; return 3; fi
  sinfo
  squeue
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
