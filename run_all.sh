#!/usr/bin/env bash
# The whole CEAR pipeline for one configuration:
#   teacher -> students (ensembles) -> baselines -> weights -> certify (all aggregations) -> table.
#
# usage: ./run_all.sh [CONFIG_DIR | --full] [extra flags for every stage, e.g. --data_dir=...]
#   CONFIG_DIR  a folder of stage flagfiles; default flags/mnist_quick (~10 min on 2 CPU cores)
#   --full      the paper-scale MNIST experiment, flags/mnist_sigma025
#
# Stages run in this order for each flagfile present in CONFIG_DIR:
#   teacher*.cfg, students*.cfg, gaussian*.cfg (cear_tf.train), weights*.cfg (cear_tf.weights),
#   certify*.cfg (cear_tf.certify), analyze.cfg (cear_tf.analyze: prints the table).
# Every stage skips finished work (exported members, existing weights, complete log rows), so
# a rerun continues where the last one stopped.
#
# Data: $DATA_DIR if set, else ../shared/datasets if present, else tensorflow-datasets.
# Python: $PYTHON if set, else .venv/bin/python if present, else python3.
set -euo pipefail
cd "$(dirname "$0")"

config=flags/mnist_quick
if [[ $# -gt 0 && $1 == --full ]]; then
  config=flags/mnist_sigma025
  shift
elif [[ $# -gt 0 && $1 != --* ]]; then
  config=${1%/}
  shift
fi
if [[ ! -d $config ]]; then
  echo "run_all.sh: configuration folder '$config' not found (expected flagfiles in it)" >&2
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

stage() {
  local module=$1 flagfile=$2
  shift 2
  echo "== $(date +%H:%M:%S) $module --flagfile=$flagfile" >&2
  "$python" -m "$module" --flagfile="$flagfile" "$@"
}

shopt -s nullglob
start=$(date +%s)
for f in "$config"/teacher*.cfg "$config"/students*.cfg "$config"/gaussian*.cfg; do
  stage cear_tf.train "$f" --verbose=2 "${data[@]}" "$@"
done
for f in "$config"/weights*.cfg; do stage cear_tf.weights "$f" "${data[@]}" "$@"; done
for f in "$config"/certify*.cfg; do stage cear_tf.certify "$f" "${data[@]}" "$@"; done
if [[ -f $config/analyze.cfg ]]; then
  echo >&2
  echo "Certified accuracy (%) and ACR, $config, $(( $(date +%s) - start )) s:" >&2
  "$python" -m cear_tf.analyze --flagfile="$config/analyze.cfg"
fi
