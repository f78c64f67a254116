#!/usr/bin/env bash
# Smoke test for the CI SLURM cluster (run after .ci/slurm/up.sh, any user):
# submits `hostname; sleep 2`, follows it with squeue (the status command the
# Snakemake plugin uses here), checks its output file and that the finished job
# is still listed by `squeue --states=all` (MinJobAge). Then, if the node has
# GPUs (up.sh's stand-ins), two `--gpus=1` jobs at once: each must get a GPU of
# its own (JOB_GRES=gpu:1 in scontrol -d show job), and CUDA_VISIBLE_DEVICES in
# the batch script and in an srun step naming one GPU, different for jobs that
# ran at the same time. Bounded: ~60 s per job at most (SLURM_SMOKE_TIMEOUT).
set -euo pipefail

TIMEOUT="${SLURM_SMOKE_TIMEOUT:-60}"
dir=$(mktemp -d "${TMPDIR:-/tmp}/slurm-smoke.XXXXXX")
trap 'rm -rf "$dir"' EXIT

fail() {
    echo "[slurm-smoke] ERROR: $1" >&2
    [ -z "${2:-}" ] || scontrol show job "$2" >&2 || true
    exit 1
}

# wait_done JOBID: until squeue lists it COMPLETED (fails on any other end state).
wait_done() {
    local jid=$1 state="" t0=$SECONDS
    while [ $((SECONDS - t0)) -lt "$TIMEOUT" ]; do
        # --states=all: without it squeue hides finished jobs (prints nothing).
        state=$(squeue -j "$jid" --states=all -h -o %T 2>/dev/null || true)
        case "$state" in
            COMPLETED) return 0 ;;
            FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
                fail "job $jid ended $state" "$jid" ;;
        esac
        sleep 1
    done
    scancel "$jid" 2>/dev/null || true
    fail "job $jid not COMPLETED after ${TIMEOUT}s (state '$state')" "$jid"
}

start=$SECONDS
# shellcheck disable=SC2016  # $SLURM_JOB_ID must expand inside the job
jid=$(sbatch --parsable --job-name=ci-smoke -t 2 --mem=100 -o "$dir/%j.out" \
    --wrap 'hostname; echo "SLURM_JOB_ID=$SLURM_JOB_ID"; sleep 2')
jid=${jid%%;*}
echo "[slurm-smoke] submitted job $jid"
wait_done "$jid"
echo "[slurm-smoke] job $jid COMPLETED after $((SECONDS - start))s"

out="$dir/$jid.out"
grep -q "SLURM_JOB_ID=$jid" "$out" || { cat "$out" >&2; fail "bad output in $out"; }
echo "[slurm-smoke] output: $(tr '\n' ' ' < "$out")"

sleep 3
state=$(squeue -j "$jid" --states=all -h -o %T 2>/dev/null || true)
[ "$state" = COMPLETED ] || fail "finished job no longer listed by squeue (MinJobAge?)"

# --- GPUs ---------------------------------------------------------------------------
gpus=$(scontrol show node | sed -n 's/^ *Gres=gpu:\([0-9]*\).*/\1/p' | head -n1)
if [ "${gpus:-0}" -lt 1 ]; then
    echo "[slurm-smoke] no GPUs on the node: GPU jobs not checked"
    echo "[slurm-smoke] ok"
    exit 0
fi
n=$(( gpus < 2 ? gpus : 2 ))
start=$SECONDS
ids=()
for _ in $(seq 1 "$n"); do
    # shellcheck disable=SC2016  # expands inside the job
    j=$(sbatch --parsable --job-name=ci-smoke-gpu --gpus=1 -t 2 --mem=100 -o "$dir/%j.out" \
        --wrap 'echo "batch=$CUDA_VISIBLE_DEVICES"; srun -n1 sh -c '"'"'echo "step=$CUDA_VISIBLE_DEVICES"'"'"'; sleep 4')
    ids+=("${j%%;*}")
done
echo "[slurm-smoke] submitted GPU jobs ${ids[*]}"
# A finished job keeps JOB_GRES=gpu:1 in scontrol -d show job, but not which GPU
# (GRES=gpu:1(IDX:<i>) is listed while it runs): the jobs print what they saw.
seen=()
for j in "${ids[@]}"; do
    wait_done "$j"
    scontrol -d show job "$j" | grep -q 'JOB_GRES=gpu:1' \
        || fail "job $j: no JOB_GRES=gpu:1 in scontrol -d show job" "$j"
    idx=$(sed -n 's/^batch=//p' "$dir/$j.out")
    [[ "$idx" =~ ^[0-9]+$ ]] && [ "$idx" -lt "$gpus" ] && grep -qx "step=$idx" "$dir/$j.out" \
        || { cat "$dir/$j.out" >&2; fail "job $j: CUDA_VISIBLE_DEVICES is not one GPU of the node"; }
    seen+=("$idx")
done
# Jobs that ran at the same time (each sleeps 4 s) must have had different GPUs.
span() { scontrol show job "$1" | sed -n 's/.*StartTime=\([^ ]*\) EndTime=\([^ ]*\).*/\1 \2/p'; }
if [ "$n" -eq 2 ]; then
    read -r s0 e0 <<<"$(span "${ids[0]}")"
    read -r s1 e1 <<<"$(span "${ids[1]}")"
    if [[ "$s1" < "$e0" && "$s0" < "$e1" ]]; then
        [ "${seen[0]}" != "${seen[1]}" ] || fail "GPU jobs ${ids[*]} ran together on one GPU (${seen[0]})"
    else
        echo "[slurm-smoke] GPU jobs ${ids[*]} did not overlap (busy node?): GPUs not compared"
    fi
fi
echo "[slurm-smoke] GPU jobs ${ids[*]} COMPLETED after $((SECONDS - start))s, on GPUs ${seen[*]}"
echo "[slurm-smoke] ok"
