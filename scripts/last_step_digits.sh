#!/usr/bin/env bash
# The noiseless last step on the digits (issue 19, docs/results.md, "The noiseless last
# step"): sft_pg_digits.ron fine-tuned with each treatment of FastDPM VAR's
# noiseless last step (task.generator.deterministic_step: Noisy, the authors';
# Noiseless, shortcut before schema 3; Excluded; Pathwise) and three seeds,
# two runs at a time with one libtorch thread each (two threads per run
# stall in OpenMP barriers when the cores are shared), then a table of the
# last evaluation of each run (sliced W2 against the training images and the
# classifier FID, from its eval.csv), mean and spread over the seeds.
#
#   scripts/last_step_digits.sh [RL_RUN] [VARIANTS...]
#
# RL_RUN defaults to target/release/rl-run; ddpm_digits must be trained (the
# first run trains it otherwise, and the others wait for it). Runs already
# finished are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
RL_RUN=${1:-target/release/rl-run}
shift || true
VARIANTS=("${@:-Noisy Noiseless Excluded Pathwise}")
read -r -a VARIANTS <<< "${VARIANTS[*]}"
SEEDS=(0 1 2)
JOBS=${JOBS:-2}
mkdir -p runs/logs

if [ ! -d runs/ddpm_digits/final ]; then
  "$RL_RUN" experiments/ddpm_digits.ron --quiet --no-table
fi

# Seed by seed, so that an interrupted sweep has every variant at its seeds.
jobs_file=$(mktemp)
for s in "${SEEDS[@]}"; do
  for v in "${VARIANTS[@]}"; do
    [ -d "runs/last_step_${v,,}_s$s/final" ] || echo "$v $s" >> "$jobs_file"
  done
done
run_one() {
  local v=$1 s=$2 name
  name="last_step_${v,,}_s$s"
  /usr/bin/time -f "%e s, %M KiB" "$RL_RUN" experiments/sft_pg_digits.ron --quiet --no-table \
    --set "name=$name" --set "seed=$s" --set threads=1 \
    --set "task.generator.deterministic_step=$v" > "runs/logs/$name.log" 2>&1
}
export -f run_one
export RL_RUN
xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"' < "$jobs_file"
rm -f "$jobs_file"

.venv/bin/python - "${VARIANTS[@]}" <<'EOF'
import csv, statistics, sys
variants = sys.argv[1:]
print("| deterministic step | sliced W2, training (x1e-2) | classifier FID | runs |")
print("|---|---|---|---|")
for v in variants:
    w2, fid = [], []
    for s in (0, 1, 2):
        with open(f"runs/last_step_{v.lower()}_s{s}/eval.csv") as f:
            last = list(csv.DictReader(f))[-1]
        w2.append(float(last["sliced_w2"]) * 100)
        fid.append(float(last["fid"]))
    spread = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0
    print(f"| {v} | {statistics.mean(w2):.2f} ± {spread(w2):.2f} | "
          f"{statistics.mean(fid):.3f} ± {spread(fid):.3f} | "
          f"{', '.join(f'{a:.2f}/{b:.3f}' for a, b in zip(w2, fid))} |")
EOF
