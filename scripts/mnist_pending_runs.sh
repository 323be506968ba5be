#!/usr/bin/env bash
# The long runs of the open MNIST issues (#36, #37), in the issues' order, one after another;
# every step resumes where it stopped (members by epoch checkpoint and export, weights by
# file, logs by row), so rerun it after an interruption:
#   PYTHON=.venv/bin/python nohup nice -n 19 scripts/mnist_pending_runs.sh > pending.log 2>&1 &
# Commit what each step finishes (its folder under results/).
#  1. #36: pooled member votes beside the sound count, the paper-protocol CEAR and CEAR-
#     ensembles on the authors' 67 images at sigma 1.0, 0.5, 0.25, and the ablation's `all`.
#  2. #36: RW weights as released (A2) on the 20-epoch `all` students; the `all` students at
#     the released 80 epochs, then A2 on them (the authors' 67 images, as `all`).
#  3. #37: the literature's Gaussian LeNet at each sigma (train 90 epochs, certify the 67).
#  4. #37: pass 2, every 20th test image (500 per sigma) for every row.
#  5. #37: Table 3's attacks on the sigma = 0.25 paper-protocol members, 100 test images
#     (measured 2026-12-07 with --stages=attack; the step finds them done and skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-.venv/bin/python}
data=${DATA_DIR:-../shared/datasets}
authors=(--start=2160 --max=3500)
for s in 100 050 025; do
  DATA_DIR=$data ./run_all.sh "flags/mnist_pooled_votes_sigma$s.toml" "${authors[@]}"
done
ABLATION_IMAGE_PASSES="--start=2160 --max=3500" scripts/mnist_ablation.sh all_pooled_votes
scripts/mnist_ablation.sh all_released_rw
# The 80-epoch students are compared with the 20-epoch `all` students, certified on the
# authors' 67 images only, so they are certified on those 67 (the `all` logs record 14-18 s
# per image and ensemble here; the every-20th pass would add 133 images per row).
ABLATION_IMAGE_PASSES="--start=2160 --max=3500" scripts/mnist_ablation.sh all_80_epochs \
  all_80_epochs_released_rw
for s in 100 050 025; do
  DATA_DIR=$data ./run_all.sh "flags/mnist_sigma$s.toml" "${authors[@]}"
done
for s in 100 050 025; do
  DATA_DIR=$data ./run_all.sh "flags/mnist_sigma$s.toml"
done
"$PYTHON" -m cear_tf.cli.run --experiment=flags/mnist_attacks.toml --data_dir="$data" \
  --set=attack.num_images=100
echo "== $(date +%H:%M:%S) all pending MNIST runs done" >&2
