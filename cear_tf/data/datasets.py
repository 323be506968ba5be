"""Data sets for CEAR: MNIST, CIFAR-10 and TinyImageNet as float32 NHWC images in [0, 1].

Splits:
  * `train`      - the official training set minus the held-out validation part;
  * `validation` - `validation_size` images held out of the official training set by a
                   permutation fixed by `split_seed` (the same for every member of an
                   ensemble, so RW weights are computed on images no student trained on);
  * `test`       - the official test set (TinyImageNet: the official `val` set, since the
                   official test labels are not public).

Sources: a local `data_dir` in the standard formats (no network at all on that path), or
tensorflow-datasets when no `data_dir` is given. Local formats understood, as a directory,
a .tar/.tar.gz/.tgz archive or a .zip archive (searched in `data_dir` and
`data_dir/<dataset>`):
  * MNIST: the four IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally gzipped.
  * CIFAR-10: the python batches (`data_batch_1..5`, `test_batch`), the binary batches
    (`data_batch_1..5.bin`, `test_batch.bin`), or an image-folder tree
    `train/<class>/*`, `test/<class>/*` (PNG or JPEG).
  * TinyImageNet: the `tiny-imagenet-200` layout (`wnids.txt`, `train/<wnid>/images/*`,
    `val/images/*` with `val/val_annotations.txt`).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import tensorflow as tf

from cear_tf.config.choices import (
    AUGMENTATIONS,
    DEFAULT_SPLIT_SEED,
    DEFAULT_VALIDATION_SIZE,
    SPLITS,
    TFDS_ORDER,
)
from cear_tf.data import local_files
from cear_tf.data.local_files import DataError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    official_train_size: int
    official_test_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tfds_name: str | None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, 60000, 10000, (0.1307,), (0.3081,), "mnist"),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, 50000, 10000,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar10"),
    "tinyimagenet": DatasetInfo("tinyimagenet", (64, 64, 3), 200, 100000, 10000,
                                (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), None),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    return DATASETS[name]


# --------------------------------------------------------------------------------------
# Public API


def load_split(
    dataset: str,
    split: str,
    data_dir: str | None = None,
    validation_size: int = DEFAULT_VALIDATION_SIZE,
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images float32 [N, H, W, C] in [0, 1], labels int64 [N]) of one split."""
    info = dataset_info(dataset)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if split == "test":
        images, labels = _load_official(info, "test", data_dir)
    else:
        images, labels = _load_official(info, "train", data_dir)
        if not 0 <= validation_size < len(labels):
            raise ValueError(
                f"validation_size must be in [0, {len(labels)}) for {dataset}, got {validation_size}")
        if split == "validation" and validation_size == 0:
            raise ValueError("the validation split is empty: set validation_size > 0")
        val_idx, train_idx = split_indices(len(labels), validation_size, split_seed)
        chosen = val_idx if split == "validation" else train_idx
        images, labels = images[chosen], labels[chosen]
    return to_float(images), labels.astype(np.int64)


def image_order(dataset: str, data_dir: str | None = None) -> str:
    """The order (one of IMAGE_ORDERS) of the official test set `load_split` reads from
    `data_dir` (tensorflow-datasets without it). Reads the data unless already loaded."""
    return _load_official_cached(dataset_info(dataset).name, "test", data_dir,
                                 _folder_key(data_dir))[2]


def split_indices(n: int, validation_size: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (validation, train) index arrays of the official training set, both sorted."""
    order = np.random.default_rng(split_seed).permutation(n)
    return np.sort(order[:validation_size]), np.sort(order[validation_size:])


def to_float(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32)


# Streams of a training pipeline's randomness, derived from the member's seed.
_SHUFFLE_STREAM = 0x5348  # "SH"
_AUGMENT_STREAM = 0x4147  # "AG"


def _epoch_key(seed: int, stream: int, epoch) -> tf.Tensor:
    """The int64 [2] stateless key of one epoch's shuffle or augmentation."""
    return tf.random.experimental.stateless_fold_in(
        tf.constant([int(seed), stream], tf.int64), tf.cast(epoch, tf.int64))


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    drop_remainder: bool = False,
    augment: str = "none",
    teacher_logits: np.ndarray | None = None,
    epochs: range | None = None,
) -> tf.data.Dataset:
    """tf.data pipeline over in-memory arrays: batches of every epoch in `epochs`, one epoch
    after another, each epoch in its own order when `shuffle`.

    Epoch e's order and augmentation are a function of (seed, e) only (stateless draws), so a
    pipeline started at epoch k yields exactly what a pipeline started at 0 yields from its
    k-th epoch on: a training run resumed at an epoch boundary sees the batches the
    uninterrupted run saw. `epochs` defaults to range(1): one epoch (evaluation).
    augment="flip_crop" applies the standard CIFAR augmentation (random horizontal flip,
    4-pixel zero padding and a random crop back to size), drawn afresh every epoch.
    With `teacher_logits` ([N, K], row i the teacher's logits on images[i]) the batches are
    ((images, teacher_logits), labels), shuffled together.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
    epochs = range(1) if epochs is None else epochs
    if epochs.step != 1 or len(epochs) < 1 or epochs.start < 0:
        raise ValueError(f"epochs must be a non-empty range of epochs >= 0, got {epochs}")
    if teacher_logits is not None:
        if len(teacher_logits) != len(labels):
            raise ValueError(f"{len(teacher_logits)} teacher logits but {len(labels)} labels")
        if augment != "none":
            raise ValueError("teacher logits precomputed on clean images cannot be combined "
                             "with augmentation: the teacher must see the augmented image")
        arrays = ((images, teacher_logits), labels)
    else:
        arrays = (images, labels)
    if not shuffle and augment == "none" and len(epochs) == 1:
        ds = tf.data.Dataset.from_tensor_slices(arrays)
        return without_autotune(ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2))
    tensors = tf.nest.map_structure(tf.convert_to_tensor, arrays)
    n = len(labels)
    shape = images.shape[1:]

    def gather(index):
        return tf.nest.map_structure(lambda t: tf.gather(t, index), tensors)

    def one_epoch(epoch):
        if shuffle:
            order = tf.argsort(tf.random.stateless_uniform(
                [n], _epoch_key(seed, _SHUFFLE_STREAM, epoch)))
        else:
            order = tf.range(n)
        ds = tf.data.Dataset.from_tensor_slices(order)
        if augment == "none":
            return ds.batch(batch_size, drop_remainder=drop_remainder).map(gather)
        augment_key = _epoch_key(seed, _AUGMENT_STREAM, epoch)

        def flip_crop(index):
            x, y = gather(index)
            key = tf.random.experimental.stateless_fold_in(augment_key, tf.cast(index, tf.int64))
            x = tf.image.stateless_random_flip_left_right(x, key)
            x = tf.pad(x, [[4, 4], [4, 4], [0, 0]])
            crop_key = tf.random.experimental.stateless_fold_in(key, 1)
            return tf.image.stateless_random_crop(x, shape, crop_key), y

        return ds.map(flip_crop, num_parallel_calls=os.cpu_count() or 1,
                      deterministic=True).batch(batch_size, drop_remainder=drop_remainder)

    ds = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(one_epoch)
    return without_autotune(ds.prefetch(2))


def without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds` with tf.data's autotuning off. Its optimisation thread sleeps in periods that
    double from 10 ms, and destroying an iterator (Keras does at every epoch's end, for
    training and for validation) can wait out the current period: a 40-step `fit` that
    computed for 1.3 s returned after 2.55 s (10 ms x (2^8 - 1)), an iterator kept 6 s
    was destroyed at 10.23 s. Fixed prefetch and map parallelism cost nothing on in-memory
    arrays."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


# --------------------------------------------------------------------------------------
# Official splits, from a local copy or tensorflow-datasets


def _load_official(info: DatasetInfo, split: str, data_dir: str | None):
    images, labels, _ = _load_official_cached(info.name, split, data_dir, _folder_key(data_dir))
    return images, labels


def _folder_key(data_dir: str | None):
    if data_dir is None:
        return None
    path = os.path.abspath(data_dir)
    return (path, os.path.getmtime(path) if os.path.exists(path) else None)


@functools.lru_cache(maxsize=4)
def _load_official_cached(name: str, split: str, data_dir: str | None, key):
    # The train and validation splits come from one decode of the official training set;
    # the key holds the folder's mtime so a changed folder is read again.
    info = DATASETS[name]
    if data_dir is None:
        images, labels = _load_tfds(info, split)
        origin, order = f"tensorflow-datasets {info.tfds_name}", TFDS_ORDER
    else:
        images, labels, order = local_files.load_local(info, split, data_dir)
        origin = data_dir
    _check_arrays(info, split, images, labels, origin)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels, order


def _check_arrays(info, split, images, labels, origin):
    if images.ndim != 4 or tuple(images.shape[1:]) != info.image_shape:
        raise DataError(f"{origin}: {info.name} {split} images have shape {images.shape}, "
                        f"expected [N, {', '.join(map(str, info.image_shape))}]")
    if len(images) != len(labels):
        raise DataError(f"{origin}: {info.name} {split} has {len(images)} images but "
                        f"{len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{origin}: {info.name} {split} is empty")
    if labels.min() < 0 or labels.max() >= info.num_classes:
        raise DataError(f"{origin}: {info.name} {split} labels span [{labels.min()}, "
                        f"{labels.max()}], expected [0, {info.num_classes - 1}]")


# Where tensorflow-datasets downloads from; checked before a download, so an offline machine
# fails in a second rather than after tfds' retries (minutes).
TFDS_HOST = ("storage.googleapis.com", 443)


def _load_tfds(info: DatasetInfo, split: str):
    """The split from tensorflow-datasets: the prepared copy if there is one, else a download
    (after checking that the download server answers)."""
    if info.tfds_name is None:
        raise DataError(f"{info.name} is not in tensorflow-datasets: pass --data_dir pointing at "
                        f"a local copy (the tiny-imagenet-200 folder or its zip)")
    hint = (f"pass --data_dir pointing at a local copy of {info.name} (see cear_tf.data.datasets for "
            f"the formats; run_all.sh reads $DATA_DIR, else ../shared/datasets when it exists)")
    try:
        import tensorflow_datasets as tfds  # Imported late: it probes the network at import.
    except ImportError as e:  # e.g. tfds 4.9.10 needs importlib_resources, not declared
        raise DataError(f"tensorflow-datasets cannot be imported ({e}); install what it names, "
                        f"or {hint}") from None
    tfds_split = "train" if split == "train" else "test"
    from absl import logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # tfds logs its probing of ~/tensorflow_datasets
    try:
        dataset = tfds.load(info.tfds_name, split=tfds_split, as_supervised=True, download=False)
    except AssertionError as e:  # tfds' way of saying "not prepared here"
        if "could not find data" not in str(e):
            raise
        logging.set_verbosity(verbosity)
        _check_download_server(info, hint)
        try:
            dataset = tfds.load(info.tfds_name, split=tfds_split, as_supervised=True)
        except Exception as e:  # noqa: BLE001 - tfds raises many types when it cannot download
            if type(e).__name__ in ("ConnectionError", "DownloadError", "NonMatchingChecksumError",
                                    "DatasetNotFoundError", "OSError", "TimeoutError") \
                    or "connection" in str(e).lower():
                raise DataError(f"tensorflow-datasets could not load {info.tfds_name} "
                                f"({type(e).__name__}: {str(e)[:200]}); offline machines: "
                                f"{hint}") from None
            raise
    finally:
        logging.set_verbosity(verbosity)
    # Batches rather than batch_size=-1: the same arrays, and tfds' mock data (tests) only
    # supports iteration.
    images, labels = [], []
    for x, y in tfds.as_numpy(dataset.batch(10000)):
        images.append(x)
        labels.append(y)
    if not images:
        raise DataError(f"tensorflow-datasets {info.tfds_name} {tfds_split} is empty")
    return (np.concatenate(images).astype(np.uint8, copy=False),
            np.concatenate(labels).astype(np.int64, copy=False))


def _check_download_server(info: DatasetInfo, hint: str) -> None:
    import socket
    try:
        socket.create_connection(TFDS_HOST, timeout=10).close()
    except OSError as e:
        raise DataError(f"{info.name}: no local copy was given (--data_dir) and "
                        f"tensorflow-datasets has no prepared copy and cannot reach "
                        f"{TFDS_HOST[0]} to download one ({e}); {hint}") from None


# --------------------------------------------------------------------------------------
# File sources: a directory, a tar archive or a zip archive, all seen as relative paths.


# --------------------------------------------------------------------------------------
# MNIST (IDX)


# --------------------------------------------------------------------------------------
# CIFAR-10 (python batches, binary batches, image folders)


# --------------------------------------------------------------------------------------
# TinyImageNet


__all__ = ["DATASETS", "SPLITS", "DataError", "DatasetInfo", "dataset_info",
           "image_order", "load_split", "make_pipeline", "split_indices", "to_float"]
