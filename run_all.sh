#!/usr/bin/env bash
# The whole CEAR pipeline for one experiment:
#   teacher -> students (ensembles) -> baselines -> weights -> certify (all aggregations) -> table.
#
# usage: ./run_all.sh [EXPERIMENT.toml | --full] [extra flags for every stage, e.g. --start=2160]
#   EXPERIMENT.toml  an experiment file (flags/*.toml: data set, sigma, output folder,
#                    member groups, methods, stage settings); default flags/mnist_quick.toml,
#                    a real-data MNIST run of about 8 minutes on 2 CPU cores
#   --full           the paper-scale MNIST experiment at sigma 0.25, flags/mnist_sigma025.toml
#
# Every stage is derived from the experiment file by `python -m cear_tf.cli.run` (see its --help;
# --dry_run prints the commands). Every stage skips finished work (exported members, existing
# weights, complete log rows), so a rerun continues where the last one stopped.
#
# Data: $DATA_DIR if set, else ../shared/datasets if present, else tensorflow-datasets.
# Python: $PYTHON if set, else .venv/bin/python if present, else python3.
set -euo pipefail
cd "$(dirname "$0")"

experiment=flags/mnist_quick.toml
if [[ $# -gt 0 && $1 == --full ]]; then
  experiment=flags/mnist_sigma025.toml
  shift
elif [[ $# -gt 0 && $1 != --* ]]; then
  experiment=$1
  shift
fi
if [[ ! -f $experiment ]]; then
  echo "run_all.sh: experiment file '$experiment' not found (see flags/*.toml)" >&2
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

exec "$python" -m cear_tf.cli.run --experiment="$experiment" "${data[@]}" -- "$@"
