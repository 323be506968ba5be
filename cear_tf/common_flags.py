"""Flags shared by every cear_tf entry point: data source, splits, seed, output directory.

Defined at import time (absl convention); each entry point imports this module and adds
its own flags, grouped by concern. Validators run when absl parses the command line, so a
bad value stops the program before any data is read or any file is written.
"""

import os

from absl import flags

from cear_tf import data, distribute

# Data.
flags.DEFINE_enum("dataset", "mnist", list(data.DATASETS), "Data set.")
flags.DEFINE_string(
    "data_dir", None,
    "Local copy of the data set in a standard format (see cear_tf.data); no network is used. "
    "If unset, tensorflow-datasets is the source.")
flags.DEFINE_integer(
    "validation_size", data.DEFAULT_VALIDATION_SIZE,
    "Images held out of the official training set as the validation split (RW/SWEEN weights).")
flags.DEFINE_integer(
    "split_seed", data.DEFAULT_SPLIT_SEED,
    "Seed of the train/validation split. Keep it equal across an ensemble so the validation "
    "split stays disjoint from every member's training data.")

# Noise. One flag for train (sigma_tr) and certify/weights (sigma_v): the paper trains and
# certifies each ensemble at the same level, so one flagfile sets both.
flags.DEFINE_float(
    "sigma", 0.25,
    "Gaussian noise std in pixel units: the training sigma_tr for cear_tf.train, the "
    "smoothing sigma_v for cear_tf.certify and cear_tf.weights.")

# Reproducibility and outputs.
flags.DEFINE_integer("seed", 0, "Random seed (initialisation, shuffling, noise).")
flags.DEFINE_string("output_dir", "runs", "Directory for models, logs and reports.")
flags.DEFINE_string(
    "outfile", None,
    "Output file: cear_tf.certify's log ('{aggregation}' is replaced by each aggregation's "
    "name, or the name is added before the suffix when several are given); cear_tf.attack's "
    "results table. '{output_dir}' is replaced by --output_dir.")
flags.DEFINE_enum("strategy", "default", list(distribute.STRATEGIES),
                  "tf.distribute strategy: default (one device), mirrored (all local GPUs), "
                  "multiworker (the workers in TF_CONFIG).")
flags.DEFINE_bool("fuse_members", True,
                  "Run LeNet-5 members as one fused network (models.fused: grouped "
                  "convolutions): cear_tf.train --role=ensemble trains them so (each member its "
                  "own batches, noise, sigma_i, temperature, seed and gradient clipping), "
                  "certify, weights and variance evaluate them so (same counts up to float "
                  "rounding). Members that cannot be fused run one after another.")
flags.DEFINE_bool("resume", True, "Resume interrupted work: training from its per-epoch "
                  "checkpoint, certification from the last complete row of its log "
                  "(checked against the log's settings). --noresume starts over.")

flags.register_validator(
    "data_dir", lambda v: v is None or os.path.exists(v),
    message="--data_dir must be an existing directory or archive")
flags.register_validator("validation_size", lambda v: v >= 0,
                         message="--validation_size must be >= 0")
flags.register_validator("sigma", lambda v: v > 0, message="--sigma must be > 0")
flags.register_validator("output_dir", lambda v: bool(v), message="--output_dir must not be empty")

FLAGS = flags.FLAGS

OUTPUT_DIR_PLACEHOLDER = "{output_dir}"


def expand_path(path):
    """Replaces '{output_dir}' in a path flag by --output_dir.

    Lets one stage flagfile (e.g. flags/mnist/students_cear.cfg) serve every experiment:
    the experiment's flagfile sets --output_dir and --sigma, the stage file the rest.
    """
    if path is None:
        return None
    return path.replace(OUTPUT_DIR_PLACEHOLDER, FLAGS.output_dir)
