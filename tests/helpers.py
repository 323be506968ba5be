"""Small helpers shared by tests: tiny splits and absl flag parsing."""

import numpy as np
from absl import flags

from cear_tf import data
from cear_tf.train import Splits


def tiny_splits(n_train=64, n_val=16, n_test=32, seed=0, dataset="mnist"):
    """Random images whose class is readable from the mean brightness (learnable fast)."""
    info = data.dataset_info(dataset)
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, info.num_classes, size=n)
        base = (y / (info.num_classes - 1)).astype(np.float32)[:, None, None, None]
        x = np.clip(base + 0.05 * rng.standard_normal((n, *info.image_shape)), 0, 1)
        return x.astype(np.float32), y.astype(np.int64)

    return Splits(make(n_train), make(n_val) if n_val else None, make(n_test), info, n_val, 0)


def parse_flags(argv):
    """Parses argv into absl FLAGS afresh (tests call entry points' main in-process)."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog", *argv])
