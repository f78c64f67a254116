#!/usr/bin/env bash
# Runs the benchmarks and writes their results into benchmarks/: one JSON per bench,
# scaling.md/png, machine.txt (CPU, cores, torch, date, load) and summary.md (the Markdown
# tables of BENCHMARKS.md's results, rendered by `python -m fpt.bench.report benchmarks`).
# About 9-10 minutes on 2 cores. Run it on a quiet machine: each JSON records the load
# average it was measured under.
#   benchmarks/run_all.sh            # everything except torch.compile (keeps an earlier compile JSON)
#   COMPILE=1 benchmarks/run_all.sh  # also torch.compile on CPU (adds minutes of compiling)
#   THREADS=1 benchmarks/run_all.sh  # torch threads for the step benches (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks
T=${THREADS:-$(nproc)}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
fpt() { python -m fpt "$@"; }
{ echo "nproc: $(nproc)"; grep -m1 "model name" /proc/cpuinfo; echo "date: $(date -u +%F)"; python -c "import torch; print('torch:', torch.__version__)"; uptime; } > $OUT/machine.txt

# 1. Training steps vs matmul peak and vs the reference-style loop, with ablations (GPT-2 small, random init)
fpt bench --task bit_memory --backbone gpt2 --size small --init random --trainable fpt \
  --warmup 2 --iters 5 --eval-examples 16 --device cpu --threads "$T" --ablations --json $OUT/bench_bit_memory.json > /dev/null
fpt bench --task cifar10 --backbone gpt2 --size small --init random --trainable fpt --fake-data \
  --warmup 2 --iters 5 --eval-examples 32 --device cpu --threads "$T" --ablations --json $OUT/bench_cifar10.json > /dev/null
if [ "${COMPILE:-0}" = 1 ]; then
  fpt bench --task bit_memory --backbone gpt2 --size small --init random --trainable fpt --compile \
    --warmup 3 --iters 5 --eval-examples 0 --no-reference --device cpu --threads "$T" --json $OUT/bench_bit_memory_compile.json > /dev/null
fi

# 2. Output-only training per epoch: uncached vs cached features (digits, GPT-2 small)
fpt bench-cache --task digits --size small --cache-examples 128 --threads "$T" --json $OUT/cache.json > /dev/null

# 3. Pipeline: dry run of the full paper grid; collect of 5,000 run files
fpt bench-dryrun --configfile config.yaml --repeats 2 --json $OUT/dryrun.json > /dev/null
fpt bench-collect --files 5000 --json $OUT/collect.json > /dev/null

# 3b. Pipeline at 10,000 runs: the dry run of a synthetic
# 10,000-run config (config.yaml's seeds grown), collect of 10,000 run files, and tables 1, 2,
# 4, 13 and the convergence figure rendered from experiments holding 10,000 runs
fpt bench-dryrun --runs 10000 --json $OUT/dryrun_10000.json > /dev/null
fpt bench-collect --files 10000 --json $OUT/collect_10000.json > /dev/null
fpt bench-tables --runs 10000 --json $OUT/tables_10000.json > /dev/null

# 4. Scaling: step time vs sequence length and model size (scaling.json/.md/.png)
fpt bench-scaling --out $OUT --threads "$T" --point-budget-s 60 > /dev/null

python -m fpt.bench.report $OUT > $OUT/summary.md
cat $OUT/summary.md
