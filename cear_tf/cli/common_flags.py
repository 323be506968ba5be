"""Flag groups shared by cear_tf's entry points: data source, splits, seed, output paths.

Nothing is defined at import: each entry point's `define_flags()` calls the groups it reads
(and only those), when it runs as a program, so importing any entry point, or two of them,
defines no flag, and a user's absl program can import the library. Validators run when absl
parses the command line, so a bad value stops the program before any work starts.
"""

import os

from absl import flags

from cear_tf.config import choices


def define_data(validation: bool = True) -> None:
    """--dataset, --data_dir and (for entry points that split the training set)
    --validation_size and --split_seed."""
    flags.DEFINE_enum("dataset", "mnist", list(choices.DATASET_NAMES), "Data set.")
    flags.DEFINE_string(
        "data_dir", None,
        "Local copy of the data set in a standard format (see cear_tf.data.datasets); no network is "
        "used. If unset, tensorflow-datasets is the source.")
    flags.register_validator(
        "data_dir", lambda v: v is None or os.path.exists(v),
        message="--data_dir must be an existing directory or archive")
    if not validation:
        return
    flags.DEFINE_integer(
        "validation_size", choices.DEFAULT_VALIDATION_SIZE,
        "Images held out of the official training set as the validation split (RW/SWEEN "
        "weights).")
    flags.DEFINE_integer(
        "split_seed", choices.DEFAULT_SPLIT_SEED,
        "Seed of the train/validation split. Keep it equal across an ensemble so the "
        "validation split stays disjoint from every member's training data.")
    flags.register_validator("validation_size", lambda v: v >= 0,
                             message="--validation_size must be >= 0")


def define_sigma(help_text: str) -> None:
    # One flag name for train (sigma_tr) and certify/weights (sigma_v): the paper trains and
    # certifies each ensemble at the same level, so one experiment file sets both.
    flags.DEFINE_float("sigma", 0.25, help_text)
    flags.register_validator("sigma", lambda v: v > 0, message="--sigma must be > 0")


def define_seed(help_text: str = "Random seed (initialisation, shuffling, noise).") -> None:
    flags.DEFINE_integer("seed", 0, help_text)


def define_output_dir() -> None:
    flags.DEFINE_string("output_dir", "runs", "Directory for models, logs and reports; "
                        "'{output_dir}' in path flags is replaced by it.")
    flags.register_validator("output_dir", lambda v: bool(v),
                             message="--output_dir must not be empty")


def define_outfile(help_text: str) -> None:
    flags.DEFINE_string("outfile", None, help_text)


def define_strategy() -> None:
    flags.DEFINE_enum("strategy", "default", list(choices.STRATEGIES),
                      "tf.distribute strategy: default (one device), mirrored (all local "
                      "GPUs), multiworker (the workers in TF_CONFIG).")


def define_fuse_members(help_text: str) -> None:
    flags.DEFINE_bool("fuse_members", True, help_text)


def define_resume(help_text: str) -> None:
    flags.DEFINE_bool("resume", True, help_text)


FLAGS = flags.FLAGS

OUTPUT_DIR_PLACEHOLDER = "{output_dir}"


def expand_path(path):
    """Replaces '{output_dir}' in a path flag by --output_dir.

    Lets one hand-written flagfile serve several runs: each run sets its own --output_dir.
    """
    if path is None:
        return None
    if OUTPUT_DIR_PLACEHOLDER in path and "output_dir" not in FLAGS:
        raise ValueError(f"{path}: '{OUTPUT_DIR_PLACEHOLDER}' cannot be used here (this tool "
                         f"has no --output_dir)")
    return path.replace(OUTPUT_DIR_PLACEHOLDER, FLAGS.output_dir)
