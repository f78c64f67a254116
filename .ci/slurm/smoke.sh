#!/usr/bin/env bash
# Smoke test for the CI SLURM cluster (run after .ci/slurm/up.sh, any user):
# submits `hostname; sleep 2`, follows it with squeue (the status command the
# Snakemake plugin uses here), checks its output file and that the finished job
# is still listed by `squeue --states=all` (MinJobAge). Bounded: ~60 s max.
set -euo pipefail

TIMEOUT="${SLURM_SMOKE_TIMEOUT:-60}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/slurm-smoke.XXXXXX")
trap 'rm -rf "$dir"' EXIT

start=$SECONDS
# shellcheck disable=SC2016  # $SLURM_JOB_ID must expand inside the job
jid=$(sbatch --parsable --job-name=ci-smoke -t 2 --mem=100 -o "$dir/%j.out" \
    --wrap 'hostname; echo "SLURM_JOB_ID=$SLURM_JOB_ID"; sleep 2')
jid=${jid%%;*}
echo "[slurm-smoke] submitted job $jid"

state=""
while [ $((SECONDS - start)) -lt "$TIMEOUT" ]; do
    # --states=all: without it squeue hides finished jobs (prints nothing).
    state=$(squeue -j "$jid" --states=all -h -o %T 2>/dev/null || true)
    case "$state" in
        COMPLETED) break ;;
        FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
            echo "[slurm-smoke] ERROR: job $jid ended $state" >&2
            scontrol show job "$jid" >&2 || true
            exit 1 ;;
    esac
    sleep 1
done
if [ "$state" != COMPLETED ]; then
    echo "[slurm-smoke] ERROR: job $jid not COMPLETED after ${TIMEOUT}s (state '$state')" >&2
    scontrol show job "$jid" >&2 || true
    scancel "$jid" 2>/dev/null || true
    exit 1
fi
echo "[slurm-smoke] job $jid COMPLETED after $((SECONDS - start))s"

out="$dir/$jid.out"
grep -q "SLURM_JOB_ID=$jid" "$out" || { echo "[slurm-smoke] ERROR: bad output in $out" >&2; cat "$out" >&2; exit 1; }
echo "[slurm-smoke] output: $(tr '\n' ' ' < "$out")"

sleep 3
state=$(squeue -j "$jid" --states=all -h -o %T 2>/dev/null || true)
[ "$state" = COMPLETED ] || { echo "[slurm-smoke] ERROR: finished job no longer listed by squeue (MinJobAge?)" >&2; exit 1; }
echo "[slurm-smoke] ok"
