"""Small helpers shared by tests: tiny splits and absl flag parsing."""

import numpy as np
from absl import flags

from cear_tf import data
from cear_tf.training import Splits


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
    from cear_tf import cli
    cli.require_finite_floats()
    values(["prog", *argv])
