"""The command-line entry points, one module each: `python -m cear_tf.cli.<name> --help`.

  train            train members (teacher, VGA students, Gaussian baselines, ensembles)
  member_accuracy  each member's clean and noisy test accuracy
  weights          fit RW / SWEEN aggregation weights on the validation split
  certify          certify a smoothed ensemble (Cohen-format log per aggregation)
  merge            join the logs of a sharded certification
  analyze          certified accuracy and ACR of logs, side by side
  variance         margin variance of soft ensembles of the first k members
  attack           APGD / FAB on the deployed ensemble (Table 3)
  export           the smoothed ensemble as one SavedModel
  run              every stage of an experiment file, in order, resumable
  report           the markdown report beside the paper's tables
  bench            certification throughput, as ratios measured in one process

Shared here: `launch` (runs an entry point: one-line errors, quiet TensorFlow start-up), the flag groups of
`common_flags` and `ensemble_flags`. Nothing outside this package defines absl flags.
"""
