#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by .ci/slurm/up.sh.
#
# Cancels all jobs, asks slurmctld to shut down (it also stops slurmd), then
# kills whatever is left via the pid files, and finally stops munged.
# Never fails because something is not running; exits non-zero only if a
# daemon survives SIGKILL.
#
# It also moves /etc/slurm/slurm.conf to slurm.conf.stopped: while a
# slurm.conf exists but slurmctld is down, every `scontrol show config` waits
# ~9 s, and snakemake-executor-plugin-slurm runs it when it is imported, i.e.
# on EVERY snakemake start (even local runs) -> +10 s each. up.sh rewrites it.
#
#   --for-restart  keep munged and slurm.conf (used by up.sh when the config
#                  changed and slurmctld/slurmd must be restarted)
set -uo pipefail

RESTART=0
[ "${1:-}" = "--for-restart" ] && RESTART=1

CONF=/etc/slurm/slurm.conf
CONF_HASH=/run/slurm-ci-up.confhash
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

log() { printf '[slurm-down] %s\n' "$*"; }

# shellcheck source=.ci/slurm/lib.sh
source "$(dirname "$0")/lib.sh"

# running PID: exists and is not a zombie
running() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# wait_gone PID SECONDS
wait_gone() {
    local pid=$1 t=$(( $2 * 5 ))
    while [ "$t" -gt 0 ] && running "$pid"; do sleep 0.2; t=$((t - 1)); done
    ! running "$pid"
}

# stop_pid PIDFILE NAME: TERM, wait 10 s, KILL, wait 5 s
stop_pid() {
    local pidfile=$1 name=$2 pid
    pid=$(live_pid "$pidfile" "$name") || { rm -f "$pidfile"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 10; then
        log "$name did not stop, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 5 || { log "ERROR: $name (pid $pid) survives SIGKILL"; return 1; }
    fi
    rm -f "$pidfile"
}

rc=0
ctld=$(live_pid "$CTLD_PID" slurmctld || true)
slurmd=$(live_pid "$SLURMD_PID" slurmd || true)

if [ -n "$ctld" ] && command -v scontrol >/dev/null 2>&1; then
    # Cancel jobs so no slurmstepd / user process outlives the cluster.
    jobs=$(timeout 10 squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
        log "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null || true
        sleep 2
    fi
    log "scontrol shutdown"
    timeout 15 scontrol shutdown 2>/dev/null || true
    [ -n "$ctld" ] && wait_gone "$ctld" 15
    [ -n "$slurmd" ] && wait_gone "$slurmd" 15
fi

stop_pid "$SLURMD_PID" slurmd || rc=1
stop_pid "$CTLD_PID" slurmctld || rc=1

if [ "$RESTART" -eq 0 ]; then
    if pid=$(live_pid "$MUNGE_PID" munged); then
        log "stopping munged (pid $pid)"
        timeout 10 munged --stop >/dev/null 2>&1 || true
        wait_gone "$pid" 5 || true
    fi
    stop_pid "$MUNGE_PID" munged || rc=1
    if [ -e "$CONF" ]; then
        log "moving $CONF to $CONF.stopped"
        mv -f "$CONF" "$CONF.stopped"
    fi
    rm -f "$CONF_HASH"
fi

if [ "$rc" -eq 0 ]; then log "stopped"; else log "some daemons could not be stopped"; fi
exit "$rc"
