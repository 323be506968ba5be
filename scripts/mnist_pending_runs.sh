#!/usr/bin/env bash
# The long runs of the open MNIST issues (#36, #37), in the issues' order; every step
# resumes where it stopped (members by epoch checkpoint and export, weights by file, logs by
# row), so rerun it after an interruption:
#   PYTHON=.venv/bin/python nohup nice -n 19 scripts/mnist_pending_runs.sh > pending.log 2>&1 &
# or name parts to run (in the order given), e.g. the two issues side by side on two cores:
#   nohup nice -n 19 scripts/mnist_pending_runs.sh issue36 > issue36.log 2>&1 &
#   nohup nice -n 19 scripts/mnist_pending_runs.sh issue37 > issue37.log 2>&1 &
# Commit what each step finishes (its folder under results/).
# Parts:
#   pooled      #36: pooled member votes beside the sound count, the paper-protocol CEAR and
#               CEAR- ensembles on the authors' 67 images at sigma 1.0, 0.5, 0.25, and the
#               ablation's `all`.
#   released    #36: RW weights as released (A2) on the 20-epoch `all` students; the `all`
#               students at the released 80 epochs, then A2 on them, then the 20-epoch
#               students again with the keyed training draws (the authors' 67 images).
#   literature  #37: the literature's Gaussian LeNet at each sigma (train 90 epochs, certify
#               the authors' 67 images).
#   pass2       #37: every 20th test image (500 per sigma) for every row.
#   attacks     #37: Table 3's attacks on the sigma = 0.25 paper-protocol members, 100 test
#               images (measured 2026-12-07; the step finds them done and skips them).
#   issue36 = pooled released; issue37 = literature pass2 attacks; default: both, in order.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-.venv/bin/python}
data=${DATA_DIR:-../shared/datasets}
authors=(--start=2160 --max=3500)

pooled() {
  for s in 100 050 025; do
    DATA_DIR=$data ./run_all.sh "flags/mnist_pooled_votes_sigma$s.toml" "${authors[@]}"
  done
  ABLATION_IMAGE_PASSES="--start=2160 --max=3500" scripts/mnist_ablation.sh all_pooled_votes
}

released() {
  scripts/mnist_ablation.sh all_released_rw
  # The 80-epoch students are compared with the 20-epoch `all` students, certified on the
  # authors' 67 images only, so they are certified on those 67 (the `all` logs record 14-18 s
  # per image and ensemble here; the every-20th pass would add 133 images per row).
  ABLATION_IMAGE_PASSES="--start=2160 --max=3500" scripts/mnist_ablation.sh all_80_epochs \
    all_80_epochs_released_rw
  # The `all` students predate the keyed training draws: the same students as the 80-epoch
  # run's after epoch 20 separate its epochs from its draws (ten released-CNN students of 20
  # epochs, about 25-60 s an epoch here; certified on the same 67 images).
  ABLATION_IMAGE_PASSES="--start=2160 --max=3500" scripts/mnist_ablation.sh all_keyed_draws
}

literature() {
  for s in 100 050 025; do
    DATA_DIR=$data ./run_all.sh "flags/mnist_sigma$s.toml" "${authors[@]}"
  done
}

pass2() {
  for s in 100 050 025; do
    DATA_DIR=$data ./run_all.sh "flags/mnist_sigma$s.toml"
  done
}

attacks() {
  "$PYTHON" -m cear_tf.cli.run --experiment=flags/mnist_attacks.toml --data_dir="$data" \
    --set=attack.num_images=100
}

parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(issue36 issue37)
expanded=()
for p in "${parts[@]}"; do
  case $p in
    issue36) expanded+=(pooled released) ;;
    issue37) expanded+=(literature pass2 attacks) ;;
    pooled|released|literature|pass2|attacks) expanded+=("$p") ;;
    *) echo "mnist_pending_runs.sh: unknown part '$p' (known: pooled released literature" \
            "pass2 attacks, issue36, issue37)" >&2
       exit 2 ;;
  esac
done
for p in "${expanded[@]}"; do
  "$p"
  echo "== $(date +%H:%M:%S) $p done" >&2
done
echo "== $(date +%H:%M:%S) pending MNIST runs done: ${expanded[*]}" >&2
