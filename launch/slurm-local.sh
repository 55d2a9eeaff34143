#!/usr/bin/env bash
# launch/slurm-local.sh -- a one-node Slurm cluster on this machine, for tests and CI.
#
#   sudo launch/slurm-local.sh            # idempotent: installs, configures, starts, checks
#   python -m overtraining.run -m checkpoint=embedded/tokens_250K,embedded/tokens_500K \
#       hydra/launcher=slurm_local sweep_name=local-slurm
#
# What it does (each step is skipped when already done):
#   1. apt-get install slurm-wlm munge (Debian/Ubuntu; needs root)
#   2. a munge key; munged running as user munge (/run/munge, /var/log/munge, /var/lib/munge)
#   3. /etc/slurm/slurm.conf for this host: partition `local` with this node's CPUs and
#      90% of its memory, proctrack/linuxproc + task/none (no cgroups: works in containers),
#      select/cons_tres, no accounting (so submitit's `sacct` calls fail: a harmless warning)
#   4. slurmctld + slurmd (restarted when the config changed), the node resumed if down
#   5. waits until `sinfo` shows the node idle, then `sbatch --array=0-2 --wrap true --wait`
# Exits 0 when the cluster is up; otherwise non-zero with one line `slurm-local: <reason>`
# on stderr (details in /var/log/slurm/*.log and /var/log/munge/munged.log).
set -uo pipefail

PARTITION=${SLURM_LOCAL_PARTITION:-local}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
CLUSTER=overtraining-local

die() { echo "slurm-local: $*" >&2; exit 1; }
quiet() { "$@" >>"$LOG_DIR/slurm-local-setup.log" 2>&1; }
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ $(id -u) -eq 0 ]] || die "needs root (apt-get, munge key, daemons); run: sudo $0"
mkdir -p "$LOG_DIR"

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "slurm-wlm/munge missing and apt-get unavailable: install them by hand"
    quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge \
        || { quiet apt-get update && quiet env DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge; } \
        || die "apt-get install slurm-wlm munge failed (see $LOG_DIR/slurm-local-setup.log)"
fi

# 2. munge
id munge >/dev/null 2>&1 || die "user munge does not exist (is the munge package installed?)"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    quiet mungekey --create --keyfile=/etc/munge/munge.key \
        || quiet dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 \
        || die "cannot create /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    quiet runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munge credentials do not round-trip"
fi

# 3. slurm.conf for this host
host=$(hostname -s)
addr=$(getent hosts "$host" | awk '{print $1; exit}')
addr=${addr:-127.0.0.1}
cpus=$(nproc --all)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
cg_max=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || echo max)
[[ $cg_max =~ ^[0-9]+$ ]] && ((cg_max / 1048576 < mem_mb)) && mem_mb=$((cg_max / 1048576))
real_mem=$((mem_mb * 9 / 10))   # below the real value, or slurmd drains the node
install -d -m 0755 "$CONF_DIR" /run/slurm /var/spool/slurmctld /var/spool/slurmd
new_conf=$(cat <<EOF
# Written by launch/slurm-local.sh: a one-node test cluster (no cgroups, no accounting).
ClusterName=$CLUSTER
SlurmctldHost=$host($addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
MaxArraySize=10001
NodeName=$host NodeAddr=$addr CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
changed=0
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$new_conf" ]]; then
    printf '%s\n' "$new_conf" >"$CONF"
    changed=1
fi

# 4. daemons (stopped by their own pid files when the config changed)
stop() {  # $1 = pid file
    pid_alive "$1" || return 0
    local pid; pid=$(cat "$1"); kill "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    die "daemon $pid ($1) did not stop"
}
if ((changed)); then stop /run/slurm/slurmd.pid; stop /run/slurm/slurmctld.pid; fi
if ! pid_alive /run/slurm/slurmctld.pid; then
    quiet slurmctld || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
fi
for _ in $(seq 40); do quiet scontrol ping && break; sleep 0.5; done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld is not answering (see $LOG_DIR/slurmctld.log)"
if ! pid_alive /run/slurm/slurmd.pid; then
    quiet slurmd || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
fi

# 5. wait for the node, then a sanity array job
state=""
for i in $(seq 60); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1)
    case $state in
        idle|mix|alloc|comp) break ;;
        down*|drain*|drng*|fail*) ((i % 5 == 1)) && quiet scontrol update NodeName="$host" State=RESUME ;;
    esac
    sleep 1
done
[[ $state =~ ^(idle|mix|alloc|comp)$ ]] \
    || die "node $host is '$state', not idle (reason: $(sinfo -h -N -n "$host" -o %E 2>/dev/null); see $LOG_DIR/slurmd.log)"
timeout 120 sbatch --quiet --wait --array=0-2 --partition="$PARTITION" --time=1 --mem=64M \
    --output=/dev/null --job-name=slurm-local-sanity --wrap true >/dev/null 2>>"$LOG_DIR/slurm-local-setup.log" \
    || die "sanity job 'sbatch --array=0-2 --wrap true' failed or timed out (see $LOG_DIR/slurmctld.log)"
echo "slurm-local: cluster $CLUSTER up: node $host ($cpus CPUs, ${real_mem} MB), partition $PARTITION"
