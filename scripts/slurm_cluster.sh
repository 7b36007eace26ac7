#!/usr/bin/env bash
# Bring a real SLURM cluster with accounting up or down on this machine: node $(hostname -s) with
# every CPU in partition `debug` (the default), two 1-CPU nodes twin1, twin2 (their own slurmd
# each, on ports 6831/6832, names in /etc/hosts) in partition `twonode`, for multi-node jobs, and a
# 1-CPU node twin3 (port 6833) in partition `side`, for a test that waits out a time limit beside
# the others (tests/conftest.py) without taking a CPU of `debug`.
# Usage: scripts/slurm_cluster.sh up|down|status
# Recipe: shared/GUIDE.md section 3 (munge, MariaDB, slurmdbd, slurmctld, slurmd; Debian 12).
# Idempotent: packages already installed, daemons already running and stale pid files are fine.
set -euo pipefail

CLUSTER=${SLURM_CLUSTER_NAME:-devcluster}
PARTITION=${SLURM_PARTITION:-debug}
CONF_DIR=/etc/slurm
DB_USER=slurm
DB_PASS=slurmdbpass
PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
TWINS="twin1 twin2 twin3"

log() { echo "[slurm-cluster] $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then log "must run as root (it installs packages and starts daemons)"; exit 2; fi
}

install_packages() {
  local missing=""
  for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  log "installing:$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
}

# task/cgroup where the cgroup v1 memory controller is mounted (as on this kind of machine); slurm
# 22.05's cgroup v2 plugin wants systemd, which these machines do not run: there memory is not
# enforced (task/none), and the OUT_OF_MEMORY test says so.
task_plugin() {
  if [ -d /sys/fs/cgroup/memory ] && [ -w /sys/fs/cgroup/memory ]; then echo task/cgroup; else
    log "warning: no writable cgroup v1 memory controller: jobs' memory is not enforced"; echo task/none; fi
}

write_configs() {
  local host mem
  host=$(hostname -s)
  # Leave 1 GiB to the OS; SLURM refuses jobs asking more than RealMemory.
  mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) - 1024 ))
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/log/slurm /run/slurm
  for n in "$host" $TWINS; do mkdir -p "/var/spool/slurmd/$n"; done
  # The twins' names must resolve (a job's first node is its rendezvous host): to this machine.
  for n in $TWINS; do grep -qw "$n" /etc/hosts || echo "127.0.0.1 $n" >> /etc/hosts; done
  cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=$(task_plugin)
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmUser=root
SlurmdUser=root
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=100000
MinJobAge=600
KillWait=10
InactiveLimit=0
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
NodeName=twin1 NodeHostname=$host Port=6831 CPUs=1 RealMemory=2048 State=UNKNOWN
NodeName=twin2 NodeHostname=$host Port=6832 CPUs=1 RealMemory=2048 State=UNKNOWN
PartitionName=twonode Nodes=twin1,twin2 Default=NO MaxTime=INFINITE State=UP
NodeName=twin3 NodeHostname=$host Port=6833 CPUs=1 RealMemory=2048 State=UNKNOWN
PartitionName=side Nodes=twin3 Default=NO MaxTime=INFINITE State=UP
CONF
  # Memory is enforced as on a production cluster: a step past its --mem is killed by the kernel
  # and ends OUT_OF_MEMORY in sacct. Only RAM is constrained: no cpuset or device confinement, so
  # the twins can share the host.
  cat > "$CONF_DIR/cgroup.conf" <<CONF
CgroupPlugin=cgroup/v1
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no
CONF
  cat > "$CONF_DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
}

# Zombies (a daemon killed a moment ago) do not count as running.
running() { pgrep -x -r R,S,D,I "$1" >/dev/null 2>&1; }

wait_for() {  # wait_for <description> <command...>
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "timed out waiting for $what"; return 1
}

start_munge() {
  running munged && return 0
  [ -f /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 || /usr/sbin/create-munge-key -f
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  rm -f /run/munge/munged.pid
  munged --force
  wait_for munge munge -n
}

start_mariadb() {
  if ! running mariadbd && ! running mysqld; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    rm -f /run/mysqld/mysqld.pid /run/mysqld/mysqld.sock
    (mysqld_safe >/dev/null 2>&1 &)
  fi
  wait_for mariadb mysqladmin ping
  mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

start_slurm() {
  if ! running slurmdbd; then rm -f /run/slurm/slurmdbd.pid; slurmdbd; fi
  wait_for slurmdbd sacctmgr -n list cluster
  sacctmgr -n list cluster format=Cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  if ! running slurmctld; then rm -f /run/slurm/slurmctld.pid; slurmctld; fi
  wait_for slurmctld scontrol ping
  start_slurmd "$(hostname -s)"
  for n in $TWINS; do start_slurmd "$n" -N "$n"; done
  # A node that was down when slurmctld last saw it needs a nudge back to service.
  wait_for "node registration" sh -c "sinfo -h -N -n $(hostname -s) -o %T | grep -Eq 'idle|mixed|alloc'" \
    || { scontrol update nodename="$(hostname -s)" state=resume; wait_for node sh -c "sinfo -h -N -n $(hostname -s) -o %T | grep -Eq 'idle|mixed|alloc'"; }
  # The twins serve only the two-node tests and the side test: one that does not come up is a
  # warning here; those tests say so (they fail under CI=true).
  for n in $TWINS; do
    wait_for "$n" sh -c "sinfo -h -N -n $n -o %T | grep -Eq 'idle|mixed|alloc'" \
      || { scontrol update nodename="$n" state=resume 2>/dev/null || true; log "warning: node $n is not up"; }
  done
}

start_slurmd() {  # start_slurmd <node name> [slurmd options]: one slurmd per node, by its pid file
  local pidfile=/run/slurm/slurmd-$1.pid; shift
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
  rm -f "$pidfile"
  slurmd "$@"
}

# What the daemons read at start: a change (this script's newer settings) needs them restarted.
config_sum() { { cat "$CONF_DIR/slurm.conf" "$CONF_DIR/cgroup.conf" 2>/dev/null || true; } | md5sum; }

stop_slurm_daemons() {
  for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null || true; done
  for d in slurmd slurmctld slurmdbd; do
    for _ in $(seq 1 60); do running "$d" || break; sleep 0.5; done
    if running "$d"; then log "$d did not stop within 30 s"; exit 1; fi
  done
  # a stopped daemon's pid may soon be another process's (or a zombie's): start_slurmd trusts the files
  rm -f /run/slurm/*.pid
}

cmd_up() {
  need_root
  install_packages
  local before; before=$(config_sum)
  write_configs
  if [ "$before" != "$(config_sum)" ] && { running slurmctld || running slurmd; }; then
    log "configuration changed: restarting SLURM's daemons"
    stop_slurm_daemons
  fi
  start_munge
  start_mariadb
  start_slurm
  log "up: cluster $CLUSTER, partition $PARTITION, node $(hostname -s) ($(nproc) CPUs); partition twonode: twin1 twin2; partition side: twin3"
}

cmd_down() {
  need_root
  stop_slurm_daemons
  mysqladmin shutdown 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  log "down"
}

cmd_status() {
  local rc=0
  for d in munged slurmdbd slurmctld slurmd; do
    if running "$d"; then echo "$d: running"; else echo "$d: stopped"; rc=1; fi
  done
  if running mariadbd || running mysqld; then echo "mariadb: running"; else echo "mariadb: stopped"; rc=1; fi
  scontrol ping 2>/dev/null | head -n1 || rc=1
  sinfo 2>/dev/null || true
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
