#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged + slurmctld + slurmd) on this machine.
#
# Idempotent: safe to run repeatedly. Installs Debian's slurm-wlm/munge if they
# are missing, (re)writes /etc/slurm/slurm.conf for this host, starts the daemons
# directly (no systemd needed) and waits until the node is `idle`.
#
# Must run as root. Environment knobs (all optional):
#   SLURM_UP_TIMEOUT   seconds to wait for the node to become idle   (default 60)
#   SLURM_MEM_MARGIN_MB  memory kept back from RealMemory            (default 1024)
#   SLURM_CLUSTER_NAME ClusterName in slurm.conf                     (default fptci)
#   SLURM_CLEAN_STATE=1  start slurmctld with -c (forget saved jobs/node state)
#   SLURM_TASK_PLUGIN  TaskPlugin (default task/none; task/affinity also works)
#   SLURM_CI_GPUS      stand-in GPUs of the node (default 2; 0: none)
#
# GPUs without GPUs: the node declares SLURM_CI_GPUS GPUs (gres.conf, Gres=gpu:N) whose
# device files are stand-ins, /run/slurm-ci-gpus/nvidia<i>: character devices with
# /dev/null's numbers, which is all slurmd checks (no cgroups here, so nothing opens them).
# `sbatch --gpus=1` is accepted and each job gets a GPU of its own and CUDA_VISIBLE_DEVICES
# naming it, as on a GPU node; CUDA itself sees no device, so work asking for `auto` falls
# back to the CPU. The stand-ins live outside /dev so that nothing else on the machine
# mistakes them for GPUs. .ci/slurm/smoke.sh checks them.
#
# Stop everything again with .ci/slurm/down.sh.
set -euo pipefail

UP_TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
MEM_MARGIN_MB="${SLURM_MEM_MARGIN_MB:-1024}"
CLUSTER_NAME="${SLURM_CLUSTER_NAME:-fptci}"
CLEAN_STATE="${SLURM_CLEAN_STATE:-0}"
TASK_PLUGIN="${SLURM_TASK_PLUGIN:-task/none}"
CI_GPUS="${SLURM_CI_GPUS:-2}"

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
GRES_CONF="$CONF_DIR/gres.conf"
GPU_DIR=/run/slurm-ci-gpus
LOG_DIR=/var/log/slurm
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
MUNGE_LOG=/var/log/munge/munged.log
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
MUNGE_KEY=/etc/munge/munge.key
CONF_HASH=/run/slurm-ci-up.confhash
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd

log() { printf '[slurm-up] %s\n' "$*"; }

die() {
    printf '[slurm-up] ERROR: %s\n' "$*" >&2
    for f in "$MUNGE_LOG" "$CTLD_LOG" "$SLURMD_LOG"; do
        if [ -r "$f" ]; then
            printf '\n----- tail -n 40 %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2 || true
        fi
    done
    printf '\n----- sinfo -----\n' >&2
    timeout 10 sinfo -N -l >&2 2>&1 || true
    exit 1
}

# shellcheck source=.ci/slurm/lib.sh
source "$(dirname "$0")/lib.sh"

# True if the pid stored in $1 belongs to a live process whose command is $2.
pid_alive() { live_pid "$@" >/dev/null; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# ---------------------------------------------------------------------------
# 1. packages
# ---------------------------------------------------------------------------
need_install=0
for cmd in slurmctld slurmd munged sinfo sbatch squeue scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" -eq 1 ]; then
    log "installing slurm-wlm + munge (apt)"
    # Keep the package maintainer scripts from starting daemons with the
    # stock config (works for both sysv invoke-rc.d and deb-systemd-invoke).
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || die "apt-get update failed"
    timeout 600 apt-get install -y -qq --no-install-recommends slurm-wlm munge \
        || die "apt-get install slurm-wlm munge failed"
    if [ "$made_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# ---------------------------------------------------------------------------
# 2. munge
# ---------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user 'munge' does not exist (munge package broken?)"
install -d -m 0700 -o munge -g munge /etc/munge /var/log/munge
install -d -m 0711 -o munge -g munge /var/lib/munge
install -d -m 0755 -o munge -g munge /run/munge
if [ ! -s "$MUNGE_KEY" ]; then
    log "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
chown munge:munge "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"

munge_ok() { timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }
if munge_ok; then
    # whoever started it (us earlier, or a distro service): it works, keep it
    log "munged already running"
else
    log "starting munged"
    if pid_alive "$MUNGE_PID" munged; then
        die "munged (pid $(cat "$MUNGE_PID")) runs but munge/unmunge fails"
    fi
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock "$MUNGE_PID"
    runuser -u munge -- /usr/sbin/munged --num-threads=2 \
        || die "munged failed to start"
    ok=0
    for _ in $(seq 1 20); do
        if munge_ok; then ok=1; break; fi
        sleep 0.5
    done
    [ "$ok" -eq 1 ] || die "munge/unmunge round trip failed"
fi

# ---------------------------------------------------------------------------
# 3. slurm.conf for this host
# ---------------------------------------------------------------------------
NODE=$(hostname -s)
[ -n "$NODE" ] || die "hostname -s is empty"
CPUS=$(nproc)
MEM_TOTAL_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
REAL_MEM=$(( MEM_TOTAL_MB - MEM_MARGIN_MB ))
[ "$REAL_MEM" -gt 512 ] || REAL_MEM=$(( MEM_TOTAL_MB * 9 / 10 ))
# Default memory for jobs that do not ask for any: an even share per CPU,
# otherwise one memory-less job would grab the whole node.
DEF_MEM_PER_CPU=$(( REAL_MEM / CPUS ))
[ "$DEF_MEM_PER_CPU" -le 2048 ] || DEF_MEM_PER_CPU=2048

# Stand-in GPU device files, and the node's Gres (empty without GPUs).
[[ "$CI_GPUS" =~ ^[0-9]+$ ]] || die "SLURM_CI_GPUS=$CI_GPUS: expected a number of GPUs"
# Character devices (slurmd refuses plain files: "is not a valid character or block
# device"), with /dev/null's numbers (1:3): opening one is harmless. slurmd checks them when
# it starts, so making one restarts it (gpus_made).
NODE_GRES=""
gpus_made=0
if [ "$CI_GPUS" -gt 0 ]; then
    NODE_GRES=" Gres=gpu:${CI_GPUS}"
    install -d -m 0755 "$GPU_DIR"
    for i in $(seq 0 $(( CI_GPUS - 1 ))); do
        dev="$GPU_DIR/nvidia$i"
        [ -c "$dev" ] && continue
        rm -f "$dev"
        mknod -m 0666 "$dev" c 1 3 || die "mknod $dev failed (no CAP_MKNOD here?)"
        gpus_made=1
    done
fi

install -d -m 0755 "$CONF_DIR" "$LOG_DIR"
install -d -m 0755 "$STATE_DIR" "$SPOOL_DIR"

tmpconf=$(mktemp)
trap 'rm -f "$tmpconf"' EXIT
cat > "$tmpconf" <<EOF
# Generated by .ci/slurm/up.sh -- single-node CI cluster. Do not edit by hand.
ClusterName=${CLUSTER_NAME}
# 127.0.0.1: do not depend on the hostname resolving on CI runners
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
MpiDefault=none
SwitchType=switch/none
# no mail on CI (Debian default /usr/bin/mail is not installed)
MailProg=/bin/true

StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${CTLD_LOG}
SlurmdLogFile=${SLURMD_LOG}
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups: this runs in containers/VMs where cgroup delegation is unreliable.
ProctrackType=proctrack/linuxproc
# task/none: no CPU binding, nothing that can fail in a restricted container;
# srun then logs a harmless "cluster configuration lacks support for cpu
# binding". SLURM_TASK_PLUGIN=task/affinity also works here (no cgroups).
TaskPlugin=${TASK_PLUGIN}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# (AccountingStorageTRES=gres/gpu would need slurmdbd: slurmctld refuses to start. A job's
# GPUs show in scontrol show job as TresPerJob=gres:gpu:1, with -d as JOB_GRES=gpu:1 and,
# while it runs, GRES=gpu:1(IDX:<i>).)
JobCompType=jobcomp/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${DEF_MEM_PER_CPU}
# Trust the numbers below instead of draining on small detection differences.
SlurmdParameters=config_overrides
# GPUs: stand-ins declared in gres.conf (see the top of up.sh); with SLURM_CI_GPUS=0
# the node has none and --gpus requests fail at submit time ("Requested node
# configuration is not available").
GresTypes=gpu

# No slurmdbd: keep finished jobs in slurmctld memory for an hour so that
# "squeue --states=all" (the Snakemake plugin's status command, and the test that
# checks every job id COMPLETED) still sees them.
MinJobAge=3600
# Reject at submission (sbatch error) jobs that can never run here, e.g. more
# CPUs than the node has; otherwise they stay PENDING (PartitionConfig) forever.
EnforcePartLimits=ALL
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0

NodeName=${NODE} NodeAddr=127.0.0.1 NodeHostname=${NODE} CPUs=${CPUS} RealMemory=${REAL_MEM}${NODE_GRES} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
# A second partition on the same node, as a cluster's GPU partition: the CI profile sends
# its jobs here, so a job listed with Partition=gpu got the profile's partition setting.
PartitionName=gpu Nodes=${NODE} Default=NO MaxTime=INFINITE State=UP
EOF

# gres.conf: one line per stand-in GPU, in index order. AutoDetect=off: never ask NVML
# (a Slurm built with it would find no GPU and drop the stand-ins).
tmpgres=$(mktemp)
trap 'rm -f "$tmpconf" "$tmpgres"' EXIT
{
    echo "# Generated by .ci/slurm/up.sh -- stand-in GPUs of the CI node. Do not edit by hand."
    echo "AutoDetect=off"
    for i in $(seq 0 $(( CI_GPUS - 1 ))); do
        echo "NodeName=${NODE} Name=gpu File=${GPU_DIR}/nvidia$i"
    done
} > "$tmpgres"

conf_changed=$gpus_made
if ! cmp -s "$tmpconf" "$CONF"; then
    log "writing $CONF (node ${NODE}, ${CPUS} CPUs, RealMemory ${REAL_MEM} MB, ${CI_GPUS} GPUs)"
    install -m 0644 "$tmpconf" "$CONF"
    conf_changed=1
fi
if ! cmp -s "$tmpgres" "$GRES_CONF"; then
    log "writing $GRES_CONF (${CI_GPUS} stand-in GPUs in ${GPU_DIR})"
    install -m 0644 "$tmpgres" "$GRES_CONF"
    conf_changed=1
fi
# cgroup.conf is only read by cgroup plugins, which are not configured above.

# ---------------------------------------------------------------------------
# 4. slurmctld + slurmd
# ---------------------------------------------------------------------------
ctld_up=0; slurmd_up=0
pid_alive "$CTLD_PID" slurmctld && ctld_up=1
pid_alive "$SLURMD_PID" slurmd && slurmd_up=1

# The hash of the config the running daemons were started with; differs from
# the file if an earlier run was interrupted between writing and restarting.
running_hash=$(cat "$CONF_HASH" 2>/dev/null || true)
conf_hash=$(cat "$CONF" "$GRES_CONF" | sha256sum | cut -d' ' -f1)
[ "$running_hash" = "$conf_hash" ] || conf_changed=1

if [ "$conf_changed" -eq 1 ] && { [ "$ctld_up" -eq 1 ] || [ "$slurmd_up" -eq 1 ]; }; then
    log "config changed while daemons run -> restarting them"
    "$(dirname "$0")/down.sh" --for-restart
    ctld_up=0; slurmd_up=0
fi

if [ "$ctld_up" -eq 1 ]; then
    log "slurmctld already running (pid $(cat "$CTLD_PID"))"
else
    log "starting slurmctld"
    rm -f "$CTLD_PID"
    ctld_args=()
    if [ "$CLEAN_STATE" = 1 ]; then ctld_args+=(-c); fi
    slurmctld "${ctld_args[@]}" || die "slurmctld failed to start"
    echo "$conf_hash" > "$CONF_HASH"
fi
ok=0
for _ in $(seq 1 40); do
    if timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then ok=1; break; fi
    sleep 0.5
done
[ "$ok" -eq 1 ] || die "slurmctld does not answer 'scontrol ping'"

if [ "$slurmd_up" -eq 1 ]; then
    log "slurmd already running (pid $(cat "$SLURMD_PID"))"
else
    log "starting slurmd -N ${NODE}"
    rm -f "$SLURMD_PID"
    slurmd -N "$NODE" || die "slurmd failed to start"
fi

# ---------------------------------------------------------------------------
# 5. wait for the node to be idle
# ---------------------------------------------------------------------------
log "waiting up to ${UP_TIMEOUT}s for node ${NODE} to become idle"
deadline=$(( SECONDS + UP_TIMEOUT ))
resumed=0
state=""
while :; do
    state=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*)
            # e.g. left DOWN by an unclean stop; ReturnToService=2 usually
            # handles this, resume explicitly once if it did not.
            if [ "$resumed" -eq 0 ]; then
                log "node state '$state' -> scontrol update state=resume"
                timeout 10 scontrol update nodename="$NODE" state=resume || true
                resumed=1
            fi ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        die "node ${NODE} not idle after ${UP_TIMEOUT}s (state: '${state:-<none>}')"
    fi
    sleep 1
done

log "cluster is up (node ${NODE}: ${state})"
sinfo
scontrol show node "$NODE" | head -n 12
