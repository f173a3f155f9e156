#!/usr/bin/env bash
# scripts/slurm.sh — a one-node Slurm cluster on this host for taskledger's Slurm
# executor tests (scripts/services.sh runs it; it can also be run on its own).
#
#   munged      Debian's munge, the key /etc/munge/munge.key (created if missing)
#   slurmctld   the controller, on 127.0.0.1:6817, state in /var/lib/slurm/slurmctld
#   slurmd      the one compute node, named `hostname -s`, on 127.0.0.1:6818, with
#               nproc CPUs and 90% of MemTotal; partition "debug" (the default)
#
# The daemons are started directly (no systemd), pid files in /var/run, logs in
# /var/log/slurm/ (munged: /var/log/munge/). Idempotent: running daemons are left
# alone; missing Debian packages (slurm-wlm, munge) are installed with apt-get.
#
# slurm.conf: written to /etc/slurm/slurm.conf when that file is missing or was
# written by this script (first line says so); a changed one restarts the daemons.
# A slurm.conf written by someone else is left alone, and only checked.
# There is no slurmdbd (it needs MariaDB): finished jobs stay known to the controller
# for MinJobAge (a day here, kept across controller restarts in StateSaveLocation),
# and jobcomp/filetxt logs each finished job to /var/log/slurm/jobcomp.log.
#
# Usage:   scripts/slurm.sh
#          (scripts/services.sh then exports TASKLEDGER_SLURM=1 and
#           TASKLEDGER_SLURM_PARTITION=debug to the tests)
# Environment:
#   TASKLEDGER_SERVICES_TIMEOUT=60  seconds to wait for each daemon to answer
#
# Exit status 0 when `sinfo` shows the node up (idle, or busy with jobs).

set -euo pipefail

_SL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
source "$_SL_DIR/lib.sh"
LIB_NAME=slurm LIB_SELF=$_SL_DIR/$(basename "${BASH_SOURCE[0]}")

_SL_CONF=/etc/slurm/slurm.conf
_SL_MARK="# written by taskledger scripts/slurm.sh (rewritten when it changes; remove this line to keep your own)"
_SL_PARTITION=debug
_SL_TIMEOUT=${TASKLEDGER_SERVICES_TIMEOUT:-60}
_SL_NODE=$(hostname -s)

_sl_wait_for() {
  local deadline=$((SECONDS + _SL_TIMEOUT))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

_sl_conf_text() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  cat <<EOF
$_SL_MARK
ClusterName=taskledger
SlurmctldHost=$_SL_NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/var/run/slurmctld.pid
SlurmdPidFile=/var/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# No cgroups in a container: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd: the controller remembers finished jobs for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MinJobAge=86400
ReturnToService=2
NodeName=$_SL_NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$_SL_PARTITION Nodes=$_SL_NODE Default=YES MaxTime=INFINITE DefMemPerCPU=256 State=UP
EOF
}

# Running daemon: its pid file names a live process of that name.
_sl_running() {
  local pid
  pid=$(cat "/var/run/$1.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1"* ]]
}

_sl_stop() {
  local pid
  _sl_running "$1" || return 0
  pid=$(cat "/var/run/$1.pid")
  lib_say "stopping $1 (pid $pid) for the new slurm.conf"
  kill "$pid"
  _sl_wait_for bash -c "! kill -0 $pid 2>/dev/null" || lib_die "$1 (pid $pid) did not stop." "Fix: 'kill -9 $pid' and rerun."
}

_sl_munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
_sl_ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
_sl_node_state() { sinfo -h -n "$_SL_NODE" -o %t 2>/dev/null | head -n 1; }
_sl_node_up() { [[ "$(_sl_node_state)" =~ ^(idle|mix|alloc|comp)$ ]]; }

_sl_ensure_packages() {
  local missing=()
  lib_have sbatch && lib_have slurmctld && lib_have slurmd || missing+=(slurm-wlm)
  lib_have munged || missing+=(munge)
  ((${#missing[@]} == 0)) || lib_apt_install "${missing[@]}"
}

_sl_ensure_munge() {
  if _sl_munge_ok; then
    lib_say "munged already running"
    return 0
  fi
  lib_need_root "starting munged"
  if [[ ! -s /etc/munge/munge.key ]]; then
    lib_say "munge: creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged ||
    lib_die "munged failed to start." "Fix: see /var/log/munge/munged.log, then rerun."
  _sl_wait_for _sl_munge_ok ||
    lib_die "munged started but 'munge -n | unmunge' fails." "Fix: see /var/log/munge/munged.log."
  lib_say "started munged"
}

# Writes slurm.conf if it is ours and differs; prints "changed" when it did.
_sl_ensure_conf() {
  local want
  want=$(_sl_conf_text)
  if [[ -f $_SL_CONF ]] && [[ "$(head -n 1 "$_SL_CONF")" != "$_SL_MARK" ]]; then
    lib_say "keeping $_SL_CONF (not written by this script); expecting partition '$_SL_PARTITION' and node $_SL_NODE" >&2
    return 0
  fi
  [[ -f $_SL_CONF && "$(cat "$_SL_CONF")" == "$want" ]] && return 0
  lib_need_root "writing $_SL_CONF"
  install -d /etc/slurm
  printf '%s\n' "$want" >"$_SL_CONF"
  lib_say "wrote $_SL_CONF (node $_SL_NODE, $(nproc) CPUs, partition $_SL_PARTITION)" >&2
  echo changed
}

_sl_ensure_daemons() {
  local changed=$1
  if [[ $changed == changed ]]; then
    _sl_stop slurmd
    _sl_stop slurmctld
  fi
  if _sl_running slurmctld; then
    lib_say "slurmctld already running"
  else
    lib_need_root "starting slurmctld"
    install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/log/slurm
    rm -f /var/run/slurmctld.pid
    slurmctld || lib_die "slurmctld failed to start." "Fix: see /var/log/slurm/slurmctld.log ('slurmctld -D -vvv' shows why)."
    lib_say "started slurmctld"
  fi
  _sl_wait_for _sl_ctld_ok ||
    lib_die "slurmctld does not answer 'scontrol ping' after ${_SL_TIMEOUT}s." \
      "Fix: see /var/log/slurm/slurmctld.log ('slurmctld -D -vvv' shows why)."
  if _sl_running slurmd; then
    lib_say "slurmd already running"
  else
    lib_need_root "starting slurmd"
    install -d /var/spool/slurmd
    rm -f /var/run/slurmd.pid
    slurmd || lib_die "slurmd failed to start." "Fix: see /var/log/slurm/slurmd.log ('slurmd -D -vvv' shows why)."
    lib_say "started slurmd"
  fi
  if ! _sl_wait_for _sl_node_up; then
    # A node left down or drained by an earlier run: put it back once.
    scontrol update nodename="$_SL_NODE" state=resume >/dev/null 2>&1 || true
    _sl_wait_for _sl_node_up ||
      lib_die "node $_SL_NODE is '$(_sl_node_state)' in sinfo, not idle, after ${_SL_TIMEOUT}s." \
        "Fix: 'scontrol show node $_SL_NODE' gives the reason; see /var/log/slurm/slurmd.log."
  fi
}

_sl_main() {
  while (($#)); do
    case $1 in
      -h | --help) sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$LIB_SELF"; return 0 ;;
      *) lib_die "unknown argument '$1'." "Fix: see '$LIB_SELF --help'." ;;
    esac
    shift
  done
  local t0=$SECONDS changed
  _sl_ensure_packages
  _sl_ensure_munge
  changed=$(_sl_ensure_conf)
  _sl_ensure_daemons "$changed"
  lib_say "node $_SL_NODE $(_sl_node_state) in partition $_SL_PARTITION ($((SECONDS - t0))s)"
}

_sl_main "$@"
