#!/usr/bin/env bash
# The released-recipe ablation at sigma = 1.0 on MNIST (docs/deviations.md): cear_tf's recipe,
# then one released choice at a time, then all of them; RandSmooth, CEAR(RW) and CEAR-(RW)
# certified for each. Each variant is an experiment file, flags/mnist_ablation_sigma100
# [_<variant>].toml (the base holds what every variant shares); a variant reuses the base's
# members it does not change and certifies only the rows it changes (the report takes the
# others from the base). Every stage resumes (members, weights, log rows), so rerun it after
# an interruption.
#   nohup nice -n 10 scripts/mnist_ablation.sh > mnist_ablation.log 2>&1 &
# Usage: scripts/mnist_ablation.sh [VARIANT ...]   (default: all, in the order below)
# Environment (tests shrink the run with these):
#   ABLATION_ROOT            folder of the variants' outputs (default: the files' results/...,
#                            or results/mnist_ablation_sigma100_seed<S> with ABLATION_SEED)
#   ABLATION_SEED            repeat the ablation with another seed (member seeds S..S+4, so
#                            their VGA sigma_i, initial weights, batches and noise all change;
#                            use S >= 5 for members independent of seed 0's)
#   ABLATION_TEACHER         the LeNet-5 teacher (default: the paper-protocol one)
#   ABLATION_IMAGE_PASSES    certify passes, ';'-separated (default: the authors' 67 images,
#                            then every 20th image up to index 4000, 200 in all)
#   ABLATION_EXTRA           extra flags for every stage
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
data=(--data_dir="${DATA_DIR:-../shared/datasets}")
read -r -a stage_extra <<<"${ABLATION_EXTRA:-}"
IFS=';' read -r -a image_passes <<<"${ABLATION_IMAGE_PASSES:---start=2160 --max=3500;--max=4000}"

variants=(base train_clip certify_clip clip fixed_copy network student_loss optimizer vga_rule all released_epochs
          all_released_rw all_keyed_draws all_80_epochs all_80_epochs_released_rw)
experiment_file() {
  if [[ $1 == base ]]; then echo flags/mnist_ablation_sigma100.toml
  else echo "flags/mnist_ablation_sigma100_$1.toml"; fi
}

todo=("$@")
[[ ${#todo[@]} -eq 0 ]] && todo=("${variants[@]}")
for v in "${todo[@]}"; do
  if [[ ! -f $(experiment_file "$v") ]]; then
    echo "mnist_ablation.sh: unknown variant '$v' (known: ${variants[*]})" >&2
    exit 2
  fi
done

if [[ -n ${ABLATION_SEED:-} ]]; then
  if ! [[ $ABLATION_SEED =~ ^[0-9]+$ ]]; then
    echo "mnist_ablation.sh: ABLATION_SEED must be a non-negative integer, got '$ABLATION_SEED'" >&2
    exit 2
  fi
  ABLATION_ROOT=${ABLATION_ROOT:-results/mnist_ablation_sigma100_seed$ABLATION_SEED}
fi

for v in "${todo[@]}"; do
  args=(--experiment="$(experiment_file "$v")" "${data[@]}")
  [[ -n ${ABLATION_ROOT:-} ]] && args+=(--output_dir="$ABLATION_ROOT/$v")
  [[ -n ${ABLATION_SEED:-} ]] && args+=(--set="seed=$ABLATION_SEED")
  [[ -n ${ABLATION_TEACHER:-} ]] && args+=(--set="members.teacher.model_dir=\"$ABLATION_TEACHER\"")
  for pass in "${image_passes[@]}"; do
    # shellcheck disable=SC2086
    "$python" -m cear_tf.cli.run "${args[@]}" -- $pass "${stage_extra[@]}"
  done
  echo "== $(date +%H:%M:%S) variant $v done" >&2
done
