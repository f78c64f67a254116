#!/usr/bin/env bash
# shellcheck disable=SC2317  # (file-wide) the steps and the cleanup trap are called indirectly
# Every CUDA path of fpt, end to end, on one GPU, offline, in under 9 minutes (random init,
# tiny or GPT-2-small shapes; no model hub, no downloads). `--cpu` runs the same steps with
# the CUDA parts replaced by their CPU equivalents (about 3 minutes on 2 cores), for CI.
#
#   benchmarks/gpu_check.sh                        # on a GPU machine
#   benchmarks/gpu_check.sh --cpu                  # the CPU equivalent (CI)
#   benchmarks/gpu_check.sh --steps "precision train" --out /tmp/gc
#   STEPS="bench lease" benchmarks/gpu_check.sh    # the same, from the environment
#
# Options: --out DIR (default ./gpu_check_out), --steps "NAMES" (default: all of them),
# --keep (keep the work folder: run folders, checkpoints, data), --budget SECONDS (the whole
# check's time limit: 540 on a GPU, 360 with --cpu; a step that would start past it is
# SKIPPED and counts as failed). Exit status: 0 when every selected step passed, else 1.
#
# Writes into DIR: summary.txt (per step: name, rc, seconds and a few lines of result),
# steps.json (the same as data), one JSON per step that measures something (precision.json,
# train.json, compile.json, resume.json, xdevice.json, pack.json, bench_*.json, lease.json,
# smk_plan_compare.json, env.json) and logs/ (every command's output).
#
# On a GPU, precision and bench run first and alone (their figures are timings); the other
# steps then run side by side in lanes (main, at the end). --cpu runs all in two lanes.
#
# Steps (each checks something and fails loudly; --cpu replacements in brackets):
#   env        versions, the GPU (nvidia-smi) [the CPU]
#   precision  fp32 / tf32 / bf16: the torch flags fpt.precision.configure sets, the matmul
#              and convolution error they give against float64 (TF32 on or off as measured),
#              that no warning is emitted, and each mode's measured matmul peak
#              [fp32 / bf16 only; tf32 must be refused on the CPU]
#   train      `fpt train` on cuda: Bit XOR in each precision, ListOps (generated data,
#              padded batches with lengths), Digits (an image task) [device cpu; tf32 refused]
#   compile    `fpt train --compile` with TORCH_LOGS=recompiles: the recompile count, why
#   resume     kill -9 a run after its second checkpoint, resume it; metrics against an
#              uninterrupted twin [bitwise equal on the CPU; within tolerance on CUDA]
#   xdevice    start on cpu, kill -9, resume on cuda: a log line naming the device mismatch and
#              rc 0, never a crash [the CPU checkpoint rewritten as a CUDA run writes it]
#   pack       a fused pack (fpt.fused) vs its lone runs, per packing family, Bit XOR and
#              ListOps (lengths under vmap), fp32 and bf16, dropout off; dropout RNGs per run
#   bench      `fpt bench` (MFU against the matmul peak of the same precision, ablations),
#              peak device memory and MFU against `fpt plan`'s estimate, `fpt bench-fused`
#              [tiny shapes; peak RSS against the plan's host memory]
#   lease      two jobs on one GPU under runs_per_gpu 2, one waiting under runs_per_gpu 1,
#              no CUDA initialised before the lease [fake GPU ids FPT_GPUS=0 / 0,1, device auto]
#   smk        a small Snakemake run with GPU jobs (a fused pack and a lone run, gpu resource,
#              leases), then `fpt plan --compare` on its runs [device auto, fake GPU ids]
#
# A GPU machine without network may lack snakemake: `pip download` its wheels elsewhere and
# `pip install --no-index --find-links DIR snakemake` there; without it step smk fails.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=cuda OUT=./gpu_check_out KEEP=0 BUDGET_S=
STEPS=${STEPS:-}
ALL_STEPS="env precision train compile resume xdevice pack bench lease smk"
while (($#)); do
  case $1 in
    --cpu) MODE=cpu ;;
    --out) OUT=$2; shift ;;
    --out=*) OUT=${1#--out=} ;;
    --steps) STEPS=$2; shift ;;
    --steps=*) STEPS=${1#--steps=} ;;
    --keep) KEEP=1 ;;
    --budget) BUDGET_S=$2; shift ;;
    -h | --help) sed -n '3,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
STEPS=${STEPS:-$ALL_STEPS}
for s in $STEPS; do
  [[ " $ALL_STEPS " == *" $s "* ]] || { echo "gpu_check.sh: no step '$s' (steps: $ALL_STEPS)" >&2; exit 2; }
done

if [ "$MODE" = cuda ]; then
  DEV=cuda PRECISIONS="fp32 tf32 bf16" BUDGET_S=${BUDGET_S:-540}
  SMALL=small  # the bench steps' GPT-2 size
  THREADS=()
else
  DEV=cpu PRECISIONS="fp32 bf16" BUDGET_S=${BUDGET_S:-360}
  SMALL=tiny
  THREADS=(--threads 1)  # two jobs often run at once on 2 cores
fi
DEADLINE=$((SECONDS + BUDGET_S))

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)  # (relative to where the script was started)
cd "$REPO" || exit 2
LOGS=$OUT/logs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fpt-gpu-check.XXXXXX")
RUNS=$WORK/runs DATA=$WORK/data RES=$WORK/results
mkdir -p "$LOGS" "$RUNS" "$DATA" "$RES"
rm -f "$LOGS"/*.log
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
: >"$WORK/steps.tsv"
BG_PIDS=()

cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  if [ "$KEEP" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Offline, and every lease, lock and cache of this check in its own folder.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export FPT_GPU_LEASE_DIR=$WORK/leases FPT_LOCK_WAIT=5 FPT_PLAN_CACHE=$WORK/plan-shapes.json
export FPT_RUNS_PER_GPU=16  # the steps' concurrent jobs share the GPU (step lease sets its own)
unset FPT_GPUS

# ---- plumbing --------------------------------------------------------------------------------

# Two commands: `fpt` (this checkout's, python -m fpt) and `py NAME ARGS` (the python helpers
# at the end of this file), as executables so that `timeout` can run them.
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec python -m fpt "$@"\n' >"$WORK/bin/fpt"
printf '#!/bin/sh\nexec python "%s/gpu_check_helpers.py" "$@"\n' "$WORK" >"$WORK/bin/py"
chmod +x "$WORK/bin/fpt" "$WORK/bin/py"
export PATH=$WORK/bin:$PATH

CUR='' FAILS=0
note() { printf '%s\n' "$@" >>"$RES/$CUR"; }  # a result line of the current step
fail() { FAILS=$((FAILS + 1)); note "FAIL: $*"; }
lim() { # lim SECONDS: that, or what is left of the budget if less (at least 5)
  local l=$((DEADLINE - SECONDS))
  if ((l < $1)); then echo $((l > 5 ? l : 5)); else echo "$1"; fi
}
# run NAME LIMIT CMD...: CMD under a time limit, its output in logs/NAME.log; returns its rc
run() {
  local name=$1 limit; limit=$(lim "$2"); shift 2
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
}
# start NAME LIMIT CMD...: `run` in the background; finish: wait for every started job, a
# failed one noted as "FAIL: NAME failed (logs/NAME.log)"
JOBS=()
start() { run "$@" & JOBS+=("$! $1"); BG_PIDS+=($!); }
finish() {
  local j
  for j in "${JOBS[@]}"; do wait "${j%% *}" || fail "${j#* } failed (logs/${j#* }.log)"; done
  JOBS=()
}
# wait_for FILE SECONDS [PID]: until FILE exists (false on timeout, or if PID ended first)
wait_for() {
  local end=$((SECONDS + $2))
  while [ ! -e "$1" ]; do
    ((SECONDS >= end)) && return 1
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.1
  done
}
bg() { "$@" & BG_PIDS+=($!); }  # a background job that cleanup kills if still running

# run_step NAME: step_NAME, its output in logs/step_NAME.log; its block (name, rc, seconds,
# result lines) goes to RES/NAME.block, printed into the summary in step order at the end
run_step() {
  local name=$1 t0=$SECONDS rc
  CUR=$name FAILS=0
  : >"$RES/$name"
  if ((SECONDS + 10 > DEADLINE)); then
    rc=124; note "SKIPPED: out of time (budget ${BUDGET_S} s)"
  else
    "step_$name" >>"$LOGS/step_$name.log" 2>&1
    rc=$?
    ((rc == 0 && FAILS > 0)) && rc=1
  fi
  local secs=$((SECONDS - t0))
  { printf '[%s] rc=%d %ds\n' "$name" "$rc" "$secs"; sed 's/^/    /' "$RES/$name" | cut -c1-240; } >"$RES/$name.block"
  printf '[%s] rc=%d %ds\n' "$name" "$rc" "$secs"
  printf '%s\t%d\t%d\n' "$name" "$rc" "$secs" >>"$WORK/steps.tsv"
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
# lane STEP...: the selected ones of these steps, one after the other, in the background
# (lanes run side by side; a step that needs another's output is in the same lane after it)
LANES=()
lane() {
  local s
  (for s in "$@"; do want "$s" && run_step "$s"; done) &
  LANES+=($!)
}

# The runs' shapes: a tiny GPT-2 on Bit XOR; ListOps from generated files (5 to 64 tokens,
# padded: batches carry lengths); the bench steps' GPT-2 size is $SMALL.
TINY=(--task bit_xor --backbone gpt2 --size tiny --init random --batch-size 8
  --micro-batch-size 4 --option val_size=64 --option test_size=128 "${THREADS[@]}")
LISTOPS=(--task listops --backbone gpt2 --size tiny --init random --batch-size 8
  --option source=generated --option gen_min_length=5 --option gen_max_length=64
  --option gen_n_train=400 --option gen_n_val=50 --option gen_n_test=50 --option max_length=64
  "${THREADS[@]}")
make_listops() { # the generated ListOps files LISTOPS reads (once)
  [ -n "$(find "$DATA" -name .complete -path '*listops-generated*' 2>/dev/null)" ] && return 0
  run make_listops 60 fpt make-listops --data-dir "$DATA" --train 400 --val 50 --test 50 \
    --min-length 5 --max-length 64
}
estimate_gpu() { # a config's estimate block naming this machine's GPU, where fpt.plan knows it
  local gpu
  [ "$MODE" = cuda ] && gpu=$(py plan_gpu "$DEV" 2>/dev/null) && echo "estimate: {gpu: $gpu}"
}
tf32_warnings() { # lines of the given logs that warn about TF32 / fp32_precision
  grep -hiE "warn" "$@" 2>/dev/null | grep -iE "tf32|fp32_precision|float32_matmul" | sort -u | head -3
}

# ---- the steps -------------------------------------------------------------------------------

step_env() {
  note "mode $MODE (device $DEV), host $(hostname), $(date -u +%FT%TZ), budget ${BUDGET_S} s"
  if [ "$MODE" = cuda ]; then
    if command -v nvidia-smi >/dev/null; then
      note "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -4)"
    else
      note "no nvidia-smi"
    fi
  fi
  py env "$MODE" "$OUT/env.json" >>"$RES/$CUR" || fail "torch sees no CUDA device (run with --cpu?)"
}

step_precision() {
  py precision "$DEV" "$OUT/precision.json" >>"$RES/$CUR" || fail "precision modes (above)"
}

step_train() {
  # the runs side by side (one thread each on a CPU; they share the GPU)
  local p dirs=()
  for p in $PRECISIONS; do
    start "train_bit_xor_$p" 150 fpt train "${TINY[@]}" --steps 100 --eval-every 50 \
      --precision "$p" --device "$DEV" --out "$RUNS/bit_xor_$p"
    dirs+=("$RUNS/bit_xor_$p")
  done
  start train_digits 150 fpt train --task digits --backbone gpt2 --size tiny --init random \
    --batch-size 8 --steps 100 --eval-every 50 "${THREADS[@]}" --device "$DEV" --out "$RUNS/digits"
  if make_listops; then
    start train_listops 150 fpt train "${LISTOPS[@]}" --steps 100 --eval-every 50 \
      --device "$DEV" --data-dir "$DATA" --out "$RUNS/listops"
  else
    fail "fpt make-listops (logs/make_listops.log)"
  fi
  dirs+=("$RUNS/listops" "$RUNS/digits")
  finish
  if [ "$MODE" = cpu ]; then # tf32 is a CUDA mode: refused on the CPU, nothing written
    if run train_tf32_cpu 60 fpt train "${TINY[@]}" --steps 10 --precision tf32 --device cpu \
      --out "$RUNS/tf32_cpu" || [ -e "$RUNS/tf32_cpu/metrics.parquet" ]; then
      fail "precision tf32 on the CPU was not refused"
    else
      note "tf32 on cpu refused: $(grep -v '^====' "$LOGS/train_tf32_cpu.log" | grep -m1 -i "tf32" | cut -c1-150)"
    fi
  fi
  py runs "$DEV" "$OUT/train.json" "${dirs[@]}" >>"$RES/$CUR" || fail "run results (above)"
  local w; w=$(tf32_warnings "$LOGS"/train_*.log)
  [ -z "$w" ] || fail "TF32 warnings in the training logs: $w"
}

step_compile() {
  # the same run as step train's fp32 Bit XOR run, compiled
  TORCH_LOGS=recompiles run compile 300 fpt train "${TINY[@]}" --steps 100 --eval-every 50 \
    --device "$DEV" --compile --out "$RUNS/compiled" || fail "fpt train --compile (logs/compile.log)"
  py recompiles "$LOGS/compile.log" "$RUNS/compiled" "$RUNS/bit_xor_fp32" "$OUT/compile.json" \
    >>"$RES/$CUR" || fail "compile results (above)"
}

step_resume() {
  local args=("${TINY[@]}" --steps 200 --eval-every 100 --ckpt-every 40 --device "$DEV") pid
  bg timeout -k 5 "$(lim 240)" fpt train "${args[@]}" --out "$RUNS/straight" \
    >"$LOGS/resume_straight.log" 2>&1
  local twin=$!
  python -m fpt train "${args[@]}" --out "$RUNS/killed" >"$LOGS/resume_killed.log" 2>&1 &
  pid=$!; BG_PIDS+=("$pid")
  wait_for "$RUNS/killed/checkpoint/ckpt.prev.pt" 120 "$pid" || fail "no second checkpoint in 120 s"
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  if [ -e "$RUNS/killed/metrics.parquet" ]; then fail "the run finished before the kill: raise --steps"; fi
  run resume_resumed 240 fpt train "${args[@]}" --out "$RUNS/killed" || fail "resume after kill -9 (logs/resume_resumed.log)"
  local from; from=$(grep -m1 -oE "resuming .* from step [0-9]+" "$LOGS/resume_resumed.log" | grep -oE "[0-9]+$")
  if [ -n "$from" ]; then note "killed after its 2nd checkpoint; the rerun resumed from step $from"; else fail "the rerun did not resume from the checkpoint"; fi
  wait "$twin" || fail "the uninterrupted twin failed (logs/resume_straight.log)"
  local exact=exact; [ "$MODE" = cuda ] && exact=tolerance
  py compare "$RUNS/killed" "$RUNS/straight" "$exact" "$OUT/resume.json" >>"$RES/$CUR" \
    || fail "resumed run differs from its uninterrupted twin (above)"
}

step_xdevice() {
  local args=("${TINY[@]}" --steps 200 --eval-every 100 --ckpt-every 40) pid
  python -m fpt train "${args[@]}" --device cpu --out "$RUNS/xdev" >"$LOGS/xdevice_cpu.log" 2>&1 &
  pid=$!; BG_PIDS+=("$pid")
  wait_for "$RUNS/xdev/checkpoint/ckpt.prev.pt" 120 "$pid" || fail "no second checkpoint in 120 s"
  kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  local to=cuda
  if [ "$MODE" = cpu ]; then # no second device: the checkpoint as a CUDA run writes it
    to=cpu
    py forge_cuda_checkpoint "$RUNS/xdev/checkpoint" >>"$RES/$CUR" || fail "rewriting the checkpoint"
  fi
  run xdevice_resume 240 fpt train "${args[@]}" --device "$to" --out "$RUNS/xdev"
  local rc=$?
  note "resume on $to: rc $rc"
  ((rc == 0)) || fail "resume across devices crashed: $(grep -E "Error|error:" "$LOGS/xdevice_resume.log" | tail -1 | cut -c1-160)"
  local said; said=$(grep -E " fpt\.[a-z_.]+ (INFO|WARNING|ERROR) " "$LOGS/xdevice_resume.log" | grep -i -m1 "device")
  if [ -n "$said" ]; then note "logged: fpt.${said#* fpt.}"; else fail "no log line names the device change"; fi
  local from; from=$(grep -m1 -oE "resuming .* from step [0-9]+" "$LOGS/xdevice_resume.log" | grep -oE "[0-9]+$")
  if [ -n "$from" ]; then note "the run resumed from step $from"; else note "the run started again from step 0"; fi
  ((rc == 0)) && { py runs "$to" "$OUT/xdevice.json" "$RUNS/xdev" >>"$RES/$CUR" || fail "run results (above)"; }
  return 0
}

step_pack() {
  timeout -k 5 "$(lim 300)" py pack "$DEV" "$DATA" "$OUT/pack.json" >>"$RES/$CUR" \
    || fail "pack vs lone (above; logs/step_pack.log)"
}

step_bench() {
  local common=(--backbone gpt2 --init random --device "$DEV" "${THREADS[@]}") p js=()
  # the training step in each precision (MFU against the same precision's matmul peak); the
  # ablations and the reference-style loop in fp32, and in bf16 on a GPU
  local precisions=$PRECISIONS
  [ "$MODE" = cpu ] && precisions=fp32  # bf16: the CIFAR-10 bench below
  for p in $precisions; do
    local extra=(--no-reference)
    if [ "$p" = fp32 ] || { [ "$p" = bf16 ] && [ "$MODE" = cuda ]; }; then extra=(--ablations); fi
    run "bench_$p" 240 fpt bench --task bit_memory --size "$SMALL" "${common[@]}" --precision "$p" \
      --warmup 3 --iters 8 --eval-examples 16 "${extra[@]}" --json "$OUT/bench_bit_memory_$p.json" \
      || fail "fpt bench $p (logs/bench_$p.log)"
    js+=("$OUT/bench_bit_memory_$p.json")
  done
  if [ "$MODE" = cuda ]; then # GPT-2 large: the BENCHMARKS GPU table's second row
    run bench_large 240 fpt bench --task bit_memory --size large "${common[@]}" --precision bf16 \
      --warmup 2 --iters 5 --eval-examples 16 --no-reference --json "$OUT/bench_bit_memory_large_bf16.json" \
      || fail "fpt bench gpt2 large (logs/bench_large.log)"
    js+=("$OUT/bench_bit_memory_large_bf16.json")
  fi
  # an image task: CIFAR-10 with random images in the real file layout, augmented on the device
  run bench_cifar10 180 fpt bench --task cifar10 --size "$SMALL" --fake-data "${common[@]}" \
    --precision bf16 --warmup 2 --iters 5 --eval-examples 16 --no-reference \
    --json "$OUT/bench_cifar10_bf16.json" || fail "fpt bench cifar10 (logs/bench_cifar10.log)"
  js+=("$OUT/bench_cifar10_bf16.json")
  # fused packs vs the same runs alone: shared frozen weights (lrs of one seed) and, on a
  # GPU, per-run frozen weights (random backbones of different seeds)
  local packs=("shared 8" "per_run 4") k n
  [ "$MODE" = cpu ] && packs=("shared 3")
  for p in "${packs[@]}"; do
    read -r k n <<<"$p"
    run "bench_fused_$k" 180 fpt bench-fused --task bit_xor --backbone gpt2 --size "$SMALL" \
      --runs "$n" --frozen "$k" --device "$DEV" "${THREADS[@]}" --warmup 2 --iters 5 \
      --json "$OUT/bench_fused_bit_xor_$k.json" || fail "fpt bench-fused $k (logs/bench_fused_$k.log)"
    js+=("$OUT/bench_fused_bit_xor_$k.json")
  done
  py bench_lines "${js[@]}" >>"$RES/$CUR" || fail "bench results (above)"
  # peak memory and MFU of one run against `fpt plan`'s estimate for it
  local cfg=$WORK/bench_plan.yaml
  cat >"$cfg" <<EOF
label: gpu check bench
results_dir: $WORK/bench/results
figures_dir: $WORK/bench/figures
data_dir: $DATA
device: $DEV
train_threads: ${THREADS[1]:-2}
$(estimate_gpu)
defaults: {backbone: gpt2, size: $SMALL, init: random, trainable: fpt, batch_size: 4, steps: 100}
experiments:
  bench: {grid: [{task: [bit_memory], backbone: [gpt2]}]}
EOF
  timeout -k 5 "$(lim 180)" py bench_memory "$DEV" "$cfg" "$OUT/bench_memory.json" >>"$RES/$CUR" \
    2>"$LOGS/bench_memory.log" || fail "peak memory vs plan (logs/bench_memory.log)"
}

step_lease() {
  # (0) importing fpt's training code and counting GPUs initialises no CUDA (the lease must
  # come first: it sets CUDA_VISIBLE_DEVICES)
  local init
  init=$(python -c "import torch, fpt.cli, fpt.train, fpt.fused, fpt.bench.step
from fpt import gpu_lease
print(gpu_lease.visible_gpus(), torch.cuda.is_initialized())" 2>>"$LOGS/step_$CUR.log")
  note "visible GPUs and CUDA initialised after imports + visible_gpus(): $init"
  [[ $init == *False ]] || fail "CUDA was initialised before the lease"
  local ldev=auto cases=("0,1 2 3" "0 1 2")  # fake ids: real leases, training on the CPU
  if [ "$MODE" = cuda ]; then
    local v; v=$(python -c "from fpt import gpu_lease; print(*gpu_lease.visible_gpus())") || v=
    read -ra v <<<"$v"
    ((${#v[@]})) || { fail "no GPU to lease"; return 1; }
    ldev=cuda cases=("${v[0]} 2 2" "${v[0]} 1 2")  # two jobs share the GPU; one waits
    ((${#v[@]} > 1)) && cases+=("${v[0]},${v[1]} 2 3")  # spread over two GPUs, then share
  fi
  [ -n "${SLURM_JOB_ID:-}" ] && note "SLURM_JOB_ID=$SLURM_JOB_ID unset for these jobs (workstation leases)"
  # lease_jobs GPUS RUNS_PER_GPU N: N training jobs started together, leasing from GPUS; a
  # watcher records who holds which slot (fpt.gpu_lease writes the holder into its lock file)
  lease_jobs() {
    local name=lease_${1//,/+}_$2x$3 pids=() j
    py lease_watch "$WORK/$name" "$WORK/$name.stop" >"$WORK/$name.watch" 2>>"$LOGS/step_$CUR.log" &
    local watch=$!; BG_PIDS+=("$watch")
    # numeric ids through FPT_GPUS; others (UUIDs, MIG) as an inherited CUDA_VISIBLE_DEVICES
    local ids=(FPT_GPUS="$1"); [[ $1 =~ ^[0-9,]+$ ]] || ids=(FPT_GPUS=all CUDA_VISIBLE_DEVICES="$1")
    for ((j = 0; j < $3; j++)); do
      env -u SLURM_JOB_ID FPT_GPU_LEASE_DIR="$WORK/$name" "${ids[@]}" FPT_RUNS_PER_GPU="$2" \
        timeout -k 5 "$(lim 180)" fpt train "${TINY[@]}" --steps 50 --eval-every 50 \
        --device "$ldev" --out "$RUNS/$name/$j" >"$LOGS/${name}_$j.log" 2>&1 &
      pids+=($!); BG_PIDS+=($!)
    done
    for j in "${pids[@]}"; do wait "$j" || fail "$name: a job failed (logs/${name}_*.log)"; done
    touch "$WORK/$name.stop"; wait "$watch"
  }
  local c
  for c in "${cases[@]}"; do
    # shellcheck disable=SC2086  # GPUS RUNS_PER_GPU N
    lease_jobs $c
  done
  py lease_report "$WORK" "$LOGS" "$OUT/lease.json" "${cases[@]}" >>"$RES/$CUR" || fail "leases (above)"
  # every leased job trained, on the device (on CUDA: its cuda:0 is the leased GPU)
  py runs "$DEV" "$WORK/lease_runs.json" "$RUNS"/lease_*/* >/dev/null || fail "a leased job's results (logs/step_lease.log)"
}

step_smk() {
  python -c "import snakemake" 2>/dev/null || { fail "snakemake is not installed"; return 1; }
  local cfg=$WORK/smk.yaml smk_dev gpus rpg cores slots
  if [ "$MODE" = cuda ]; then # one GPU, two jobs on it (runs_per_gpu 2)
    gpus=$(python -c "from fpt import gpu_lease; print(gpu_lease.visible_gpus()[0])")
    [[ $gpus =~ ^[0-9]+$ ]] && gpus="[$gpus]" || gpus=all
    smk_dev=cuda rpg=2 cores=4 slots=2
  else # fake GPU ids: the jobs lease them, and train on the CPU
    smk_dev=auto gpus="[0, 1]" rpg=1 cores=2 slots=2
  fi
  cat >"$cfg" <<EOF
label: gpu check
results_dir: $WORK/smk/results
figures_dir: $WORK/smk/figures
weights_dir: $WORK/smk/weights
data_dir: $DATA
device: $smk_dev
gpus: $gpus
runs_per_gpu: $rpg
pack_size: 2
train_threads: 1
$(estimate_gpu)
defaults: {backbone: gpt2, size: tiny, init: random, steps: 200, batch_size: 8,
           micro_batch_size: 4, eval_every: 100, ckpt_every: 100,
           options: {val_size: 64, test_size: 128}}
experiments:
  gpu_check:
    grid:
      # two lrs of one seed: one fused pack (fpt train-pack)
      - {task: [bit_xor], backbone: [gpt2], trainable: [fpt], seed: [0], lr: [1.0e-3, 3.0e-4]}
      # a lone job beside it
      - {task: [bit_xor], backbone: [gpt2], trainable: [full], seed: [0]}
EOF
  local results=$WORK/smk/results
  env -u SLURM_JOB_ID FPT_GPU_LEASE_DIR="$WORK/leases_smk" timeout -k 5 "$(lim 240)" python -m snakemake -s "$REPO/workflow/Snakefile" \
    --configfile "$cfg" --directory "$WORK/smk" --cores "$cores" --resources gpu="$slots" \
    -- "$results/metrics.parquet" "$results/benchmarks/train.tsv" >"$LOGS/smk_snakemake.log" 2>&1 \
    || fail "snakemake (logs/smk_snakemake.log)"
  find "$results/logs/train" -name '*.log' -exec cat {} + >"$LOGS/smk_jobs.log" 2>/dev/null
  run smk_plan 120 fpt plan --configfile "$cfg" --compare "$results" --json || fail "fpt plan --compare"
  cp "$LOGS/smk_plan.log" "$OUT/smk_plan_compare.json"
  cp "$results/benchmarks/train.tsv" "$OUT/smk_train.tsv" 2>/dev/null
  py smk_report "$results" "$LOGS/smk_jobs.log" "$OUT/smk_plan_compare.json" "$smk_dev" \
    >>"$RES/$CUR" || fail "snakemake results (above)"
}

# ---- the python helpers (written to the work folder; `py NAME ARGS`) -------------------------

write_helpers() {
  cat >"$WORK/gpu_check_helpers.py" <<'PY'
"""Helpers of benchmarks/gpu_check.sh: each prints a few result lines, writes a JSON and
exits non-zero when its check fails. Everything printed is measured here or read from
fpt's own output."""
import json
import math
import os
import sys
import time
from pathlib import Path


def dump(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


def verdict(failures):
    """Print each failure; the step's exit status (1 when any)."""
    for f in failures:
        print("FAIL:", str(f)[:230])
    return 1 if failures else 0


def env(mode, out):
    import platform

    import torch

    info = {"mode": mode, "python": platform.python_version(), "torch": torch.__version__,
            "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "loadavg": os.getloadavg(), "nproc": os.cpu_count()}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    from fpt import precision
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["capability"] = torch.cuda.get_device_capability(0)
    info["cpu"] = precision.device_name(torch.device("cpu"))
    dump(out, info)
    print(f"python {info['python']}, torch {info['torch']} (CUDA build {info['cuda_build']}), "
          f"transformers {info['transformers']}; CPU {info['cpu']} x{info['nproc']}")
    if info["cuda_available"]:
        print(f"GPUs: {info['gpus']} (capability {info['capability']})")
    if mode == "cuda" and not info["cuda_available"]:
        return 1
    if mode == "cpu" and info["cuda_available"]:
        print("note: CUDA is available, but --cpu runs on the CPU (the lease/smk jobs may use it)")
    return 0


def _flags(torch):
    """TF32 switches as torch reports them now: the fp32_precision API where torch has it
    (reading the legacy allow_tf32 after the new API was used raises), else the legacy."""
    out = {}
    b = torch.backends
    for name, get in (("cuda.matmul.fp32_precision", lambda: b.cuda.matmul.fp32_precision),
                      ("cudnn.fp32_precision", lambda: b.cudnn.fp32_precision),
                      ("cudnn.conv.fp32_precision", lambda: b.cudnn.conv.fp32_precision),
                      ("cudnn.rnn.fp32_precision", lambda: b.cudnn.rnn.fp32_precision),
                      ("fp32_precision", lambda: b.fp32_precision)):
        try:
            out[name] = get()
        except Exception as exc:  # an older torch, or a mix of the two APIs
            out[name] = f"unreadable ({type(exc).__name__})"
    if not hasattr(b.cuda.matmul, "fp32_precision"):
        out["cuda.matmul.allow_tf32"] = b.cuda.matmul.allow_tf32
        out["cudnn.allow_tf32"] = b.cudnn.allow_tf32
    return out


def _rel_err(got, ref):
    return ((got.double() - ref).norm() / ref.norm()).item()


def precision(device, out):
    import warnings

    import torch
    import torch.nn.functional as F

    from fpt import precision as P
    from fpt.bench.timing import matmul_peak

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    modes = ["fp32", "tf32", "bf16"] if cuda else ["fp32", "bf16"]
    tf32_hw = cuda and torch.cuda.get_device_capability(dev)[0] >= 8
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(2048, 2048, device=dev, generator=gen)
    b = torch.randn(2048, 2048, device=dev, generator=gen)
    ref = a.double() @ b.double()
    x = torch.randn(8, 64, 32, 32, device=dev, generator=gen)
    w = torch.randn(64, 64, 3, 3, device=dev, generator=gen)
    conv_ref = F.conv2d(x.double(), w.double(), padding=1)
    res, failed = {}, []
    IEEE = 5e-5  # fp32 matmul / conv error above this (vs float64): TF32 products (~1e-4..1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for p in modes:
            n0 = len(caught)
            autocast = P.configure(p, dev)
            flags = _flags(torch)
            mm_err = _rel_err(a @ b, ref)  # plain fp32 tensors, outside autocast
            conv_err = _rel_err(F.conv2d(x, w, padding=1), conv_ref)
            with autocast():
                auto_dtype = str((a @ b).dtype).replace("torch.", "")
            peak = matmul_peak(dev, torch.bfloat16 if p == "bf16" else torch.float32, 1.0)
            warned = sorted({f"{c.category.__name__}: {str(c.message)[:160]}" for c in caught[n0:]})
            res[p] = {"flags": flags, "fp32_matmul_rel_err": mm_err, "fp32_conv_rel_err": conv_err,
                      "tf32_matmul": mm_err > IEEE, "tf32_conv": conv_err > IEEE,
                      "autocast_matmul_dtype": auto_dtype, "matmul_peak_tflops": peak / 1e12,
                      "warnings": warned}
            want_tf32 = p == "tf32" and tf32_hw
            if (mm_err > IEEE) != want_tf32:
                failed.append(f"{p}: fp32 matmul error {mm_err:.1e}: TF32 {'on' if mm_err > IEEE else 'off'}")
            if p != "tf32" and conv_err > IEEE:
                failed.append(f"{p}: fp32 convolution error {conv_err:.1e}: cuDNN TF32 on")
            if auto_dtype != ("bfloat16" if p == "bf16" else "float32"):
                failed.append(f"{p}: a matmul under its autocast gives {auto_dtype}")
            if warned:
                failed.append(f"{p}: warnings: {warned}")
            print(f"{p}: peak {peak / 1e12:.2f} TFLOP/s; fp32 matmul err {mm_err:.1e}, conv err "
                  f"{conv_err:.1e} (TF32 {'on' if mm_err > IEEE else 'off'}); autocast -> "
                  f"{auto_dtype}; {len(warned)} warnings")
            print(f"    flags: {json.dumps(flags)}")
    if not cuda:  # tf32 is a CUDA matmul mode: refused on the CPU
        try:
            P.configure("tf32", dev)
            failed.append("tf32 on the CPU was accepted")
            res["tf32"] = {"refused": False}
        except ValueError as exc:
            res["tf32"] = {"refused": True, "message": str(exc)}
            print(f"tf32 on cpu refused: {str(exc)[:120]}")
    dump(out, {"device": P.device_name(dev), "modes": res, "failed": failed})
    return verdict(failed)


def _final(metrics):
    import pandas as pd

    df = pd.read_parquet(metrics)
    last = df[df["step"] == df["step"].max()]
    return df, {r.split: (float(r.loss), float(r.accuracy)) for r in last.itertuples()}


def runs(device, out, *dirs):
    """The last evaluation of each run folder; checks it trained on `device` to its end."""
    results, bad = {}, []
    for d in map(Path, dirs):
        m = d / "metrics.parquet"
        if not m.exists():
            bad.append(f"{d.name}: no metrics.parquet")
            continue
        df, final = _final(m)
        row = df.iloc[-1]
        steps = int(row["steps"])
        stop = None if row["stop_step"] != row["stop_step"] else int(row["stop_step"])
        r = {"device": str(row["device"]), "device_name": str(row["device_name"]),
             "precision": row.get("precision"), "steps": steps, "stop_step": stop,
             "wall_s": float(row["wall_s"]), "steps_per_s": steps / max(float(row["wall_s"]), 1e-9),
             "final": final, "rows": len(df)}
        results[d.name] = r
        if not str(r["device"]).startswith(device):
            bad.append(f"{d.name}: trained on {r['device']}, not {device}")
        if r["stop_step"] != steps or not all(math.isfinite(v[0]) for v in final.values()):
            bad.append(f"{d.name}: stopped at {r['stop_step']} of {steps}, or a non-finite loss")
        accs = " ".join(f"{k}={v[1]:.3f}" for k, v in sorted(final.items()))
        print(f"{d.name}: {r['device']} ({str(r['device_name'])[:28]}) {r['precision']}, "
              f"{steps} steps in {r['wall_s']:.1f} s ({r['steps_per_s']:.0f}/s), {accs}")
    dump(out, {"runs": results, "failed": bad})
    return verdict(bad)


def recompiles(log, compiled, eager, out):
    import re

    text = Path(log).read_text(errors="replace")
    recompiles = len(re.findall(r"Recompiling function", text))
    reasons = sorted({m.strip() for m in re.findall(r"\[__recompiles\]\s+- (.*)", text)})
    limit = bool(re.search(r"recompile_limit|cache_size_limit", text))
    res = {"recompiles": recompiles, "reasons": reasons, "hit_recompile_limit": limit}
    for name, d in (("compiled", compiled), ("eager", eager)):
        m = Path(d) / "metrics.parquet"
        if m.exists():
            df, final = _final(m)
            res[name] = {"wall_s": float(df["wall_s"].max()), "final": final}
    dump(out, res)
    print(f"recompiles: {recompiles}; hit the recompile limit: {limit}")
    for r in reasons[:4]:
        print(f"    because {r[:150]}")
    if "compiled" in res and "eager" in res:
        c, e = res["compiled"], res["eager"]
        print(f"wall (incl. compiling): compiled {c['wall_s']:.1f} s, eager {e['wall_s']:.1f} s "
              f"(step train); test acc {c['final']['test'][1]:.3f} vs {e['final']['test'][1]:.3f}")
    return 1 if limit or "compiled" not in res else 0


def compare(a, b, how, out):
    """A resumed run against its uninterrupted twin: the same rows; equal values on the CPU
    (`exact`), within tolerance on CUDA (non-deterministic kernels)."""
    import pandas as pd

    keys = ["step", "split"]
    x = pd.read_parquet(Path(a) / "metrics.parquet").set_index(keys).sort_index()
    y = pd.read_parquet(Path(b) / "metrics.parquet").set_index(keys).sort_index()
    same_rows = list(x.index) == list(y.index)
    dl = float((x["loss"] - y["loss"]).abs().max()) if same_rows else math.inf
    da = float((x["accuracy"] - y["accuracy"]).abs().max()) if same_rows else math.inf
    ok = same_rows and (dl == 0 and da == 0 if how == "exact" else dl < 1e-2 and da <= 0.05)
    dump(out, {"same_rows": same_rows, "max_abs_loss_diff": dl, "max_abs_accuracy_diff": da,
               "rule": how, "rows": len(x), "ok": ok})
    print(f"resumed vs uninterrupted: {len(x)} rows, same steps {same_rows}, max |dloss| {dl:.2e}, "
          f"max |dacc| {da:.3f} ({'must be equal' if how == 'exact' else 'tolerance 1e-2 / 0.05'})")
    return 0 if ok else 1


def forge_cuda_checkpoint(ckpt_dir):
    """Rewrite a CPU run's checkpoints as a CUDA run would have written them: CUDA RNG states
    (16-byte Philox seed + offset) for the data generator and the "cuda" states, and the
    device recorded as cuda wherever the state names one."""
    import torch

    from fpt import checkpoint

    def philox(seed):
        return torch.tensor(list(int(seed).to_bytes(8, "little") + bytes(8)), dtype=torch.uint8)

    def to_cuda(v):
        if isinstance(v, torch.device) and v.type == "cpu":
            return torch.device("cuda")
        return "cuda" if v == "cpu" else v

    d = Path(ckpt_dir)
    for name in ("ckpt.prev.pt", "ckpt.pt"):  # saved in this order: each rotates in
        state = torch.load(d / name, weights_only=True)
        rng = state["rng"]
        rng["data"] = philox(state["spec"].get("seed", 0))
        rng["cuda"] = philox(state["spec"].get("seed", 0))
        if "device" in rng:  # fpt records the device its RNG states belong to
            rng["device"] = "cuda"
        state = {k: (v if isinstance(v, (dict, list, torch.Tensor)) else to_cuda(v))
                 for k, v in state.items()}
        for row in state.get("rows", []):
            if row.get("device") == "cpu":
                row["device"], row["device_name"] = "cuda", "forged by gpu_check.sh"
        checkpoint.save(d, state)
    print(f"checkpoint rewritten as a CUDA run's (RNG states of {len(rng['data'])} bytes)")
    return 0


def pack(device, data_dir, out):
    """A fused pack of two runs (two lrs of one seed: shared frozen weights) against the same
    runs stepped alone, on the same batches, dropout off (CUDA's native dropout kernel draws
    other masks than the pack's per-run generators): per packing family, Bit XOR and ListOps
    (padded batches with lengths, under vmap), fp32 and bf16."""
    import dataclasses
    import traceback

    import torch

    from fpt.fused import Pack, fused_step
    from fpt.models import FAMILIES
    from fpt.packs import why_not_packable
    from fpt.spec import RunSpec
    from fpt.train import Loop, build_run

    dev = torch.device(device)
    listops = {"source": "generated", "gen_min_length": 5, "gen_max_length": 64,
               "gen_n_train": 400, "gen_n_val": 50, "gen_n_test": 50, "max_length": 64}
    tasks = {"bit_xor": {"val_size": 32, "test_size": 32}, "listops": listops}
    tol = {"fp32": 1e-4, "bf16": 3e-2}

    def loops(specs):
        out = []
        for s in specs:
            _, task, model = build_run(s, dev, None, Path(data_dir))
            lp = Loop(s, task, model, dev)
            lp.use_own_dropout_rng()
            out.append(lp)
        return out

    families, cases, failed = {}, [], []
    for name in sorted(FAMILIES):
        base = RunSpec(task="bit_xor", backbone=name, size="tiny", init="random", batch_size=8,
                       micro_batch_size=4, options=tasks["bit_xor"])
        why = why_not_packable([base, dataclasses.replace(base, lr=base.lr / 3)])
        families[name] = why or "packs"
    packing = [f for f, why in families.items() if why == "packs"]
    print(f"packing families: {', '.join(packing)}; not: "
          + "; ".join(f"{f} ({w[:60]})" for f, w in families.items() if w != "packs"))
    for prec in ("fp32", "bf16"):
        for task, opts in tasks.items():
            for fam in packing:
                case = {"precision": prec, "task": task, "backbone": fam}
                base = RunSpec(task=task, backbone=fam, size="tiny", init="random",
                               batch_size=8, micro_batch_size=4, precision=prec, options=opts)
                specs = [base, dataclasses.replace(base, lr=base.lr / 3)]
                if why_not_packable(specs) is not None:  # e.g. a precision the family's packs lack
                    families[f"{fam} {prec}"] = why_not_packable(specs)
                    continue
                try:
                    lone, fused = loops(specs), loops(specs)
                    pk = Pack(fused)
                    for lp in lone + fused:
                        lp.model.eval()
                    g = torch.Generator(device=dev).manual_seed(1)
                    batches = [lone[0].task.train_batch(8, g) for _ in range(3)]
                    lengths = batches[0].lengths is not None
                    for bt in batches:
                        for lp in lone:
                            lp.advance(bt)
                        fused_step(pk, [0, 1], [bt, bt])
                    losses = [(f.acc.mean()[0], a.acc.mean()[0]) for f, a in zip(fused, lone, strict=True)]
                    rel = max(abs(f - a) / abs(a) for f, a in losses)
                    for lp in fused:  # dropout on: each run's generator draws its masks
                        lp.model.train()
                    before = [gn.get_state().clone() for gn in pk.gens]
                    fused_step(pk, [0, 1], batches[:1] * 2)
                    moved = all(not torch.equal(s, gn.get_state()) for s, gn in zip(before, pk.gens, strict=True))
                    ok = rel <= tol[prec] and moved
                    case |= {"train_loss_fused_lone": losses, "train_loss_rel_diff": rel,
                             "tolerance": tol[prec], "lengths": lengths,
                             "shared_frozen": len(pk.shared), "stacked_frozen": len(pk.stacked_frozen),
                             "dropout_generators": [gn.device.type for gn in pk.gens],
                             "dropout_rng_advanced": moved, "ok": ok}
                except Exception as exc:
                    traceback.print_exc()
                    case |= {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                cases.append(case)
                if not case["ok"]:
                    why = case.get("error") or (
                        f"train loss fused {case['train_loss_fused_lone'][0][0]:.4g} vs lone "
                        f"{case['train_loss_fused_lone'][0][1]:.4g} (rel diff {case['train_loss_rel_diff']:.1e}, "
                        f"tolerance {case['tolerance']}); dropout RNGs advanced {case['dropout_rng_advanced']}")
                    failed.append(f"{prec} {task} {fam}: {why}")
    dump(out, {"device": str(dev), "families": families, "cases": cases, "failed": failed})
    for prec in ("fp32", "bf16"):
        for task in tasks:
            row = [c for c in cases if c["precision"] == prec and c["task"] == task]
            cells = ", ".join(f"{c['backbone']} {c['train_loss_rel_diff']:.0e}" if "error" not in c
                              else f"{c['backbone']} ERROR" for c in row)
            print(f"{prec} {task}: loss rel diff fused vs lone: {cells}")
    return verdict(failed)


def bench_lines(*files):
    bad = 0
    for f in map(Path, files):
        if not f.exists():
            print(f"{f.name}: missing")
            bad += 1
            continue
        j = json.loads(f.read_text())
        if "speedup" in j:  # bench-fused
            print(f"{f.stem}: {j['runs']} runs ({j['frozen_weights']}): lone {j['lone_run_steps_per_s']:.1f},"
                  f" fused {j['fused_run_steps_per_s']:.1f} run-steps/s (fused/lone {j['speedup']:.2f}x)")
            continue
        o = j["ours"]
        line = (f"{f.stem}: {j['run']['size']} {j['dtype']}: step {o['step_s'] * 1e3:.1f} ms, MFU "
                f"{o['fraction_of_peak']:.3f} of {j['matmul_peak_flops'] / 1e12:.2f} TFLOP/s")
        if "speedup_vs_reference" in j:
            line += f", {j['speedup_vs_reference']:.2f}x the reference loop"
        if "ablations" in j:
            line += "; undoing: " + ", ".join(f"{k} {v['ours_speedup']:.2f}x" for k, v in j["ablations"].items())
        print(line)
        if not 0 < o["fraction_of_peak"] <= 1:
            print(f"FAIL: {f.stem}: MFU {o['fraction_of_peak']} outside (0, 1]")
            bad += 1
    return 1 if bad else 0


def plan_gpu(device):
    """The GPU (of `fpt plan --gpu`'s choices) this machine has; nothing if it has none of them."""
    import torch

    from fpt import plan

    name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None
    gpu = plan.gpu_for_device_name(name)
    if gpu:
        print(json.dumps(gpu))
    return 0 if gpu else 1


def bench_memory(device, cfg, out, warmup=3, iters=8):
    """One run of `cfg` (a one-run config): peak memory and MFU of its training step and
    evaluation, measured, against `fpt plan --json --runs`'s estimate for that run."""
    import resource
    import subprocess

    import torch

    from fpt import grid
    from fpt.bench.step import eval_rate, step_flops, time_our_step
    from fpt.bench.timing import matmul_peak

    config = grid.load_config(cfg)
    (path, spec), = grid.expand(config).runs.items()
    planned = json.loads(subprocess.run(
        [sys.executable, "-m", "fpt", "plan", "--configfile", cfg, "--json", "--runs"],
        check=True, capture_output=True, text=True).stdout)
    est = next(r for r in planned["runs"] if r["run"] == path)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:  # the job's threads, as the plan assumes (and as `fpt train --threads` sets)
        torch.set_num_threads(int(config["train_threads"]))
    loop, t = time_our_step(spec, dev, int(warmup), int(iters))
    eval_rate(loop, spec.eval_batch_size)  # one evaluation batch of eval_batch_size
    if cuda:
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        # the process's context (driver, cuBLAS workspaces) + torch's peak reservation
        context = (total - free) - torch.cuda.memory_reserved()
        measured = context + torch.cuda.max_memory_reserved()
        extra = {"max_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
                 "max_memory_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
                 "context_mb": context / 2**20}
        predicted, what = est["device_mb"], "device memory"
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        extra = {}
        predicted, what = est["host_mb"], "host memory (peak RSS)"
    flops = step_flops(loop.model, loop.task, spec.batch_size)
    peak = matmul_peak(dev, torch.bfloat16 if spec.precision == "bf16" else torch.float32)
    mfu = flops / t["step_s"] / peak
    res = {"run": path, "precision": spec.precision, "step_s": t["step_s"], "mfu": mfu,
           "matmul_peak_flops": peak, "plan_hardware": planned["hardware"],
           "measured_mb": measured / 2**20, "plan_mb": predicted, "what": what,
           "ratio": measured / 2**20 / predicted, **extra}
    dump(out, res)
    print(f"{what}: measured {res['measured_mb']:.0f} MB, fpt plan {predicted:.0f} MB "
          f"(measured/plan {res['ratio']:.2f})")
    hw = planned["hardware"]
    assumed = (f"{hw['mfu']} of {hw['gpu']}'s peak" if cuda else
               f"{hw['cpu_fraction']} of the CPU peak + {hw['cpu_op_us']} us per op")
    print(f"{spec.backbone} {spec.size} {spec.task} {spec.precision}: MFU {mfu:.3f} measured; "
          f"fpt plan assumes {assumed}")
    return 0


def lease_watch(folder, stop):
    """Poll a lease folder's lock files until `stop` exists; print the most slots held at once
    and every (gpu, slot, pid) seen. Reads only: fpt.gpu_lease writes the holder into the
    lock file and empties it on release."""
    seen, most = set(), 0
    while not os.path.exists(stop):
        held = []
        for f in Path(folder).glob("gpu-*.lock"):
            try:
                who = json.loads(f.read_text() or "null")
            except (OSError, ValueError):
                continue
            if who:
                held.append((str(who.get("gpu")), who.get("slot"), who.get("pid")))
        most = max(most, len(held))
        seen.update(held)
        time.sleep(0.05)
    print(json.dumps({"most_held_at_once": most, "held": sorted(seen, key=str)}))
    return 0


def lease_report(work, logs, out, *cases):
    """Each case "GPUS RUNS_PER_GPU N" (N jobs started together): the slots they leased, as
    fpt.gpu_lease spreads them (the least leased GPU first, ties to the first listed), how
    many were held at once, and whether a job had to wait."""
    import re

    work, logs = Path(work), Path(logs)
    res, bad = {}, []
    for case in cases:
        gpus, per, n = case.split()
        gpus, per, n = gpus.split(","), int(per), int(n)
        name = f"lease_{'+'.join(gpus)}_{per}x{n}"
        slots = len(gpus) * per
        want = {(gpus[k % len(gpus)], k // len(gpus)) for k in range(min(n, slots))}
        w = json.loads((work / f"{name}.watch").read_text() or "{}")
        text = "".join(p.read_text(errors="replace") for p in sorted(logs.glob(f"{name}_*.log")))
        leased = sorted(set(re.findall(r"leased GPU (\S+) \(slot (\d+) of (\d+)", text)))
        got = {(g, int(s)) for g, s, _ in leased}
        waited = "waiting for a GPU" in text
        r = {"gpus": gpus, "runs_per_gpu": per, "jobs": n, "leased": leased, "waited": waited,
             "most_held_at_once": w.get("most_held_at_once")}
        res[name] = r
        print(f"FPT_GPUS={','.join(gpus)} runs_per_gpu {per}, {n} jobs: "
              + ", ".join(f"GPU {g} slot {s}" for g, s, _ in leased)
              + f"; {r['most_held_at_once']} held at once; a job waited: {waited}")
        if got != want or r["most_held_at_once"] != min(n, slots) or waited != (n > slots):
            bad.append(f"{name}: expected slots {sorted(want)}, {min(n, slots)} held at once, "
                       f"waiting {n > slots}")
    dump(out, {"cases": res, "failed": bad})
    return verdict(bad)


def smk_report(results, jobs_log, plan_json, device):
    import pandas as pd

    results = Path(results)
    bad = []
    m = results / "metrics.parquet"
    if not m.exists():
        print("FAIL: no collected metrics.parquet")
        return 1
    df = pd.read_parquet(m)
    runs = df.groupby("run").agg(device=("device", "last"), step=("step", "max"))
    print(f"{len(runs)} runs collected, devices {sorted(map(str, runs['device'].unique()))}, "
          f"steps {sorted(map(int, runs['step'].unique()))}")
    log = Path(jobs_log).read_text(errors="replace") if Path(jobs_log).exists() else ""
    leases = log.count("leased GPU")
    packs = log.count("pack of 2")
    print(f"job logs: {leases} GPU leases, pack job(s) logged: {packs > 0}")
    if len(runs) != 3:
        bad.append(f"{len(runs)} runs, expected 3")
    if device == "cuda" and not all(str(d).startswith("cuda") for d in runs["device"]):
        bad.append("a run did not train on cuda")
    if leases < 2 or packs == 0:
        bad.append(f"{leases} leases logged, pack job logged: {packs > 0}; expected a lease per "
                   "job (2: a pack and a lone run)")
    try:
        p = json.loads(Path(plan_json).read_text())
        s = p["summary"]
        print(f"fpt plan --compare: {s['runs']} runs, measured/predicted time {s['ratio']:.2f} "
              f"(median {s['median_ratio']:.2f}); memory median {s['median_mem_ratio']:.2f}")
    except (OSError, ValueError, KeyError) as exc:
        bad.append(f"fpt plan --compare output unreadable: {exc}")
    return verdict(bad)


if __name__ == "__main__":
    sys.exit(globals()[sys.argv[1]](*sys.argv[2:]))
PY
}

# ---- main ------------------------------------------------------------------------------------

write_helpers
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
echo "fpt gpu_check ($MODE): $(date -u +%FT%TZ) on $(hostname), git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet 2>/dev/null || echo '+changes'), load average $LOAD0, steps: $STEPS" >"$SUMMARY"
cat "$SUMMARY"
T0=$SECONDS
want env && run_step env
if [ "$MODE" = cuda ]; then # the timed steps alone on the machine, first
  want precision && run_step precision
  want bench && run_step bench
fi
if want train || want pack; then # the ListOps files both read, made once
  CUR=listops FAILS=0; : >"$RES/listops"
  make_listops || echo "fpt make-listops failed (logs/make_listops.log)"
fi
# the rest side by side: their checks do not depend on speed
if [ "$MODE" = cpu ]; then # two lanes for two cores (most of their jobs are single-threaded)
  lane precision train compile bench
  lane resume xdevice lease smk pack
else
  lane train compile
  lane resume xdevice
  lane pack
  lane lease smk
fi
wait "${LANES[@]}"

for s in $ALL_STEPS; do
  want "$s" && cat "$RES/$s.block" >>"$SUMMARY"
done
failed=$(awk -F'\t' '$2 != 0 {printf "%s ", $1}' "$WORK/steps.tsv")
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)
python - "$WORK/steps.tsv" "$OUT/steps.json" "$MODE" "$((SECONDS - T0))" "$LOAD0" "$LOAD1" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
steps = [{"step": n, "rc": int(rc), "seconds": int(s)} for n, rc, s in rows]
json.dump({"mode": sys.argv[3], "seconds": int(sys.argv[4]), "loadavg_before": sys.argv[5],
           "loadavg_after": sys.argv[6], "steps": steps}, open(sys.argv[2], "w"), indent=2)
PY
if [ -z "$failed" ]; then
  echo "RESULT: all $(wc -l <"$WORK/steps.tsv") steps passed in $((SECONDS - T0)) s ($MODE; load average after: $LOAD1)" >>"$SUMMARY"
  status=0
else
  echo "RESULT: FAILED: ${failed% } ($((SECONDS - T0)) s, $MODE; load average after: $LOAD1; logs in $LOGS)" >>"$SUMMARY"
  status=1
fi
echo "==== $SUMMARY"
cat "$SUMMARY"
exit "$status"
