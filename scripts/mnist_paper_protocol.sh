#!/usr/bin/env bash
# MNIST at the paper's protocol (Table 4): sigma 1.0, then 0.5, then 0.25, every stage
# resumable (members by epoch checkpoint and export, weights by file, certify logs by row).
#   pass 1: train every member, fit the RW/SWEEN weights, certify the 67 test images the
#           authors' certify script covers (indices 2160..3480, every 20th);
#   pass 2: fill in the rest of every 20th test image (500 in all) by resuming the same logs.
# The experiments are flags/mnist_sigma{100,050,025}.toml; everything lands under
# results/mnist_teacher and results/mnist_sigma<s>/.
# Long (hours per sigma on 2 cores): run it in the background and rerun it to resume,
#   nohup nice -n 10 scripts/mnist_paper_protocol.sh > mnist_paper_protocol.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
sigmas=(100 050 025)
for s in "${sigmas[@]}"; do
  ./run_all.sh "flags/mnist_sigma$s.toml" --start=2160 --max=3500 "$@"
done
for s in "${sigmas[@]}"; do
  ./run_all.sh "flags/mnist_sigma$s.toml" "$@"
done
