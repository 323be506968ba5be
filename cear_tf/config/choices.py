"""The names flags choose from, in a module that imports nothing heavy: entry points define
their flags from these without loading TensorFlow, so `--help` answers at once. Each
library module takes its names from here (one source), and tests check they agree with what
the library implements."""

from __future__ import annotations

import re

DATASET_NAMES = ("mnist", "cifar10", "tinyimagenet")
SPLITS = ("train", "validation", "test")
AUGMENTATIONS = ("none", "flip_crop")
DEFAULT_VALIDATION_SIZE = 5000
DEFAULT_SPLIT_SEED = 0
# What index i of an official test set means. Only in the "original" order is image i the
# official release's image i, so that published per-index selections (the authors' certify
# script certifies test images 2160, 2180, ..., 3480) pick the same images here.
ORIGINAL_ORDER = "original"  # the release's files in their order (MNIST idx files, CIFAR-10
                             # batches, TinyImageNet's val_annotations.txt)
BY_CLASS_ORDER = "by_class"  # an image-folder tree read class by class: the original order is lost
TFDS_ORDER = "tfds"          # tensorflow-datasets' order: its generator shuffles the examples
IMAGE_ORDERS = (ORIGINAL_ORDER, BY_CLASS_ORDER, TFDS_ORDER)

STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

MODEL_NAMES = ("lenet5", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
               "resnet18", "released_mnist_cnn", "literature_lenet")
NOISE_MODES = ("per_model", "per_example")
VGA_RULES = ("uniform", "released_mnist", "released_cifar")
STUDENT_LOSSES = ("hinton", "released_mnist")

NORMS = ("inf", "2")
ATTACKS = ("apgd-ce", "apgd-dlr", "fab")

AGGREGATIONS = ("single", "mean", "mv", "rw", "gm", "sween")
WEIGHTED = ("rw", "sween")
# "<name>_first<k>": the unweighted aggregation over the first k members only (the ensembles
# of k = 1..M members of Horvath et al. 2022, all certified from one set of member passes).
PREFIXABLE = ("mean", "mv", "gm")
_PREFIX = re.compile(r"(" + "|".join(PREFIXABLE) + r")_first([1-9][0-9]*)")


def parse_aggregation(name: str) -> tuple[str, int | None] | None:
    """(base aggregation, k or None) of an aggregation name, None if it is not one."""
    if name in AGGREGATIONS:
        return name, None
    m = _PREFIX.fullmatch(name)
    return (m.group(1), int(m.group(2))) if m else None
