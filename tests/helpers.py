"""Helpers shared by the tests (no test module imports another): tiny splits and members,
absl flag parsing, tiny training and certification runs."""

import csv

import keras
import numpy as np
from absl import flags

from cear_tf.cli import certify
from cear_tf.data import datasets
from cear_tf.ensemble import members
from cear_tf.reporting.log_files import read_rows
from cear_tf.training import loop, recipe
from cear_tf.training.recipe import Splits


def tiny_splits(n_train=64, n_val=16, n_test=32, seed=0, dataset="mnist"):
    """Random images whose class is readable from the mean brightness (learnable fast)."""
    info = datasets.dataset_info(dataset)
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, info.num_classes, size=n)
        base = (y / (info.num_classes - 1)).astype(np.float32)[:, None, None, None]
        x = np.clip(base + 0.05 * rng.standard_normal((n, *info.image_shape)), 0, 1)
        return x.astype(np.float32), y.astype(np.int64)

    return Splits(make(n_train), make(n_val) if n_val else None, make(n_test), info, n_val, 0)


def cear_tf_flags() -> set[str]:
    """Names (long and short) of the flags defined by cear_tf's modules, not by absl or TF."""
    return {name for module, defined in flags.FLAGS.flags_by_module_dict().items()
            if module.startswith("cear_tf") for f in defined for name in (f.name, f.short_name)
            if name}


def parse_flags(argv, entry_point):
    """Defines the flags of `entry_point` (a cear_tf entry-point module) alone, as running it
    does, and parses argv into them (tests call entry points' main in-process)."""
    values = flags.FLAGS
    values.unparse_flags()
    for name in cear_tf_flags():
        if name in values:
            delattr(values, name)
    entry_point.define_flags()
    from cear_tf.cli import launch
    launch.require_finite_floats()
    values(["prog", *argv])


# ---- members and runs shared by several test modules ----------------------------------

HALVES_SHAPE = (6, 6, 1)
HALVES_CLASSES = 3


def train_tiny(*args, **kw):
    """train_member on tiny random splits, where accuracy is not the point: export even at
    chance level (the collapse check has tests of its own)."""
    kw.setdefault("allow_collapsed", True)
    return loop.train_member(*args, **kw)


def member_config(**kw):
    base = dict(role="teacher", arch="lenet5", dataset="mnist", seed=0, epochs=1, batch_size=16,
                learning_rate=0.05, lr_schedule="constant")
    base.update(kw)
    return recipe.MemberConfig(**base)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt("simulated interruption")


def epochs_logged(model_dir):
    with open(model_dir + ".logs/train.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def constant_member(path, cls, k=10, shape=(28, 28, 1), strength=4.0):
    """A member whose logits favour `cls`, weakly modulated by the input."""
    inputs = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(k)
    out = dense(x)
    model = keras.Model(inputs, out)
    kernel = np.zeros((shape[-1], k), np.float32)
    kernel[:, (cls + 1) % k] = 1.0
    bias = np.zeros(k, np.float32)
    bias[cls] = strength
    dense.set_weights([kernel, bias])
    members.export_member(model, str(path), {"role": "test", "predicts": cls})
    return str(path)


def certify_tiny(setup, outfile, *extra):
    parse_flags([f"--data_dir={setup['data_dir']}", f"--models={setup['ens']}", "--sigma=0.25",
                 "--N0=20", "--N=200", "--batch=64", "--alpha=0.01", "--validation_size=10",
                 f"--outfile={outfile}", *extra], certify)
    certify.main(["prog"])


def rows_without_time(path):
    return [{k: v for k, v in r.items() if k != "time"} for r in read_rows(path)]


def halves_member(path, gain):
    """Class 0 scores the left half's brightness, class 1 the right half's, class 2 never
    wins: images with balanced halves make PREDICT abstain, lopsided ones answer."""
    h, w, _ = HALVES_SHAPE
    net = keras.Sequential([keras.Input(HALVES_SHAPE), keras.layers.Flatten(),
                            keras.layers.Dense(HALVES_CLASSES)])
    left = (np.arange(h * w) % w < w // 2).astype(np.float32)
    kernel = np.stack([gain * left, gain * (1 - left), np.zeros_like(left)], axis=1)
    net.layers[-1].set_weights([kernel, np.array([0.0, 0.0, -100.0], np.float32)])
    members.export_member(net, str(path), {"role": "test"})
    return str(path)
