#!/usr/bin/env bash
# The whole CEAR pipeline for one experiment:
#   teacher -> students (ensembles) -> baselines -> weights -> certify (all aggregations) -> table.
#
# usage: ./run_all.sh [EXPERIMENT.cfg | --full] [extra flags for every stage, e.g. --data_dir=...]
#   EXPERIMENT.cfg  an experiment flagfile (--dataset, --sigma, --output_dir, ...); default
#                   flags/mnist_quick.cfg, a real-data MNIST run of about 8 minutes on 2 CPU cores
#   --full          the paper-scale MNIST experiment at sigma 0.25, flags/mnist_sigma025.cfg
#
# The stage flagfiles come from the folder named like the experiment without its _sigma<...>
# part (flags/mnist_sigma050_cpu.cfg -> flags/mnist_cpu/). Each stage runs as
#   python -m <module> --flagfile=<stage file> --flagfile=<experiment file> [extra flags]
# in this order: teacher*.cfg, students*.cfg, gaussian*.cfg (cear_tf.train), weights*.cfg
# (cear_tf.weights), certify*.cfg (cear_tf.certify), variance*.cfg (cear_tf.variance),
# attack*.cfg (cear_tf.attack), analyze.cfg (cear_tf.analyze: the table).
# Every stage skips finished work (exported members, existing weights, complete log rows), so a
# rerun continues where the last one stopped.
#
# Data: $DATA_DIR if set, else ../shared/datasets if present, else tensorflow-datasets.
# Python: $PYTHON if set, else .venv/bin/python if present, else python3.
set -euo pipefail
cd "$(dirname "$0")"

experiment=flags/mnist_quick.cfg
if [[ $# -gt 0 && $1 == --full ]]; then
  experiment=flags/mnist_sigma025.cfg
  shift
elif [[ $# -gt 0 && $1 != --* ]]; then
  experiment=$1
  shift
fi
if [[ ! -f $experiment ]]; then
  echo "run_all.sh: experiment flagfile '$experiment' not found (see flags/*.cfg)" >&2
  exit 2
fi
name=$(basename "$experiment" .cfg)
stages=$(dirname "$experiment")/$(sed -E 's/_sigma[0-9]+//' <<<"$name")
if [[ ! -d $stages ]]; then
  echo "run_all.sh: stage folder '$stages' for experiment '$experiment' not found" >&2
  exit 2
fi

python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi

data=()
if [[ -n ${DATA_DIR:-} ]]; then
  data=("--data_dir=$DATA_DIR")
elif [[ -d ../shared/datasets ]]; then
  data=("--data_dir=../shared/datasets")
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

# The experiment file's keys: every stage gets them, and a stage that does not read one (each
# entry point defines only the flags it reads) lets it pass.
EXPERIMENT_KEYS=dataset,data_dir,sigma,output_dir,validation_size,split_seed,seed

stage() {
  local module=$1 flagfile=$2
  shift 2
  echo "== $(date +%H:%M:%S) $module --flagfile=$flagfile --flagfile=$experiment" >&2
  "$python" -m "$module" --flagfile="$flagfile" --flagfile="$experiment" \
    --undefok="$EXPERIMENT_KEYS" "$@"
}

shopt -s nullglob
start=$(date +%s)
for f in "$stages"/teacher*.cfg "$stages"/students*.cfg "$stages"/gaussian*.cfg; do
  stage cear_tf.train "$f" --verbose=2 "${data[@]}" "$@"
done
for f in "$stages"/weights*.cfg; do stage cear_tf.weights "$f" "${data[@]}" "$@"; done
for f in "$stages"/certify*.cfg; do stage cear_tf.certify "$f" "${data[@]}" "$@"; done
for f in "$stages"/variance*.cfg; do stage cear_tf.variance "$f" "${data[@]}" "$@"; done
for f in "$stages"/attack*.cfg; do stage cear_tf.attack "$f" "${data[@]}" "$@"; done
output_dir=$(sed -nE 's/^--output_dir=(.*)$/\1/p' "$experiment" | tail -1)
echo "Members, weights and certify logs: ${output_dir:-runs}" >&2
if [[ -f $stages/analyze.cfg ]]; then
  echo "Certified accuracy (%) and ACR, $experiment, $(( $(date +%s) - start )) s:" >&2
  stage cear_tf.analyze "$stages/analyze.cfg" "$@"
fi
