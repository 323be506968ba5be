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
import gzip
import hashlib
import functools
import os
import pickle
import posixpath
import tarfile
import zipfile
from typing import Iterable

import numpy as np
import tensorflow as tf

from cear_tf.config.choices import (AUGMENTATIONS, BY_CLASS_ORDER, DEFAULT_SPLIT_SEED,
                             DEFAULT_VALIDATION_SIZE, IMAGE_ORDERS, ORIGINAL_ORDER, SPLITS,
                             TFDS_ORDER)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """A local data set is missing, unreadable or not what its format promises."""


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
        images, labels, order = _load_local(info, split, data_dir)
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


def _load_local(info: DatasetInfo, split: str, data_dir: str):
    if not os.path.exists(data_dir):
        raise DataError(f"--data_dir {data_dir} does not exist")
    errors = []
    parser = _PARSERS[info.name]
    for path in _candidate_paths(data_dir, info.name):
        cache = _cache_file(path, info.name, split)
        if cache and os.path.exists(cache):
            with np.load(cache) as z:
                if "order" in z:  # a cache written before orders were recorded is decoded again
                    return z["images"], z["labels"], str(z["order"])
        source = _DirSource(path) if os.path.isdir(path) else _open_archive(path)
        try:
            images, labels, order = parser(source, split)
        except _FormatNotHere as e:
            errors.append(f"  {source.description}: {e}")
            continue
        finally:
            source.close()
        if cache:
            _write_cache(cache, images, labels, order)
        return images, labels, order
    raise DataError(
        f"no {info.name} data found under {data_dir}. Expected {_EXPECTED[info.name]}, as a "
        f"directory or a .tar/.tar.gz/.zip archive in {data_dir} or {data_dir}/{info.name}.\n"
        + "\n".join(errors))


def _cache_file(path: str, dataset: str, split: str) -> str | None:
    """Decoded-array cache for archives (decoding 60,000 JPEGs takes ~25 s on 2 cores).

    Keyed by the archive's path, size and mtime; directories are not cached, since a
    change deep inside one would not show in its mtime. CEAR_TF_CACHE sets the folder
    (default ~/.cache/cear_tf); CEAR_TF_CACHE=off disables it.
    """
    root = os.environ.get("CEAR_TF_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                        "cear_tf"))
    if root == "off" or not os.path.isfile(path):
        return None
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{dataset}|"
                         f"{split}".encode()).hexdigest()[:20]
    return os.path.join(root, f"{dataset}-{split}-{key}.npz")


def _write_cache(cache: str, images: np.ndarray, labels: np.ndarray, order: str) -> None:
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp.npz"
        np.savez(tmp, images=images, labels=labels, order=np.asarray(order))
        os.replace(tmp, cache)
    except OSError:
        pass  # A cache that cannot be written only costs time.


_EXPECTED = {
    "mnist": "the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
             "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz)",
    "cifar10": "CIFAR-10 python batches (data_batch_1..5, test_batch), binary batches "
               "(data_batch_1..5.bin, test_batch.bin) or an image-folder tree "
               "train/<class>/*, test/<class>/*",
    "tinyimagenet": "tiny-imagenet-200/ with wnids.txt, train/<wnid>/images/*, val/images/* "
                    "and val/val_annotations.txt",
}


class _FormatNotHere(Exception):
    """This source does not hold the data set in a format we know (try the next one)."""


# --------------------------------------------------------------------------------------
# File sources: a directory, a tar archive or a zip archive, all seen as relative paths.


class _Source:
    description: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def close(self):
        pass

    def find(self, basename_options: Iterable[str]) -> str | None:
        """The shortest path whose basename is one of the options (searching subfolders)."""
        wanted = set(basename_options)
        hits = [n for n in self.names() if posixpath.basename(n) in wanted]
        return min(hits, key=lambda n: (n.count("/"), n)) if hits else None


class _DirSource(_Source):
    def __init__(self, root: str, max_depth: int = 3):
        self.root = root
        self.description = f"directory {root}"
        self._max_depth = max_depth
        self._names = None

    def names(self):
        if self._names is None:
            names = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                rel = os.path.relpath(dirpath, self.root)
                depth = 0 if rel == "." else rel.count(os.sep) + 1
                if depth >= self._max_depth + 2:
                    dirnames[:] = []
                dirnames.sort()
                for f in sorted(filenames):
                    path = f if rel == "." else os.path.join(rel, f)
                    names.append(path.replace(os.sep, "/"))
            self._names = names
        return self._names

    def read(self, name):
        path = os.path.join(self.root, *name.split("/"))
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}") from e


class _TarSource(_Source):
    def __init__(self, path: str):
        self.description = f"archive {path}"
        self._path = path
        try:
            # Read every regular member once: gzip'd tars have no random access.
            with tarfile.open(path) as tar:
                self._data = {}
                for m in tar:
                    if m.isfile():
                        self._data[m.name.lstrip("./")] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"cannot read archive {path}: {e}") from e

    def names(self):
        return sorted(self._data)

    def read(self, name):
        return self._data[name]


class _ZipSource(_Source):
    def __init__(self, path: str):
        self.description = f"archive {path}"
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"cannot read archive {path}: {e}") from e

    def names(self):
        return sorted(n for n in self._zip.namelist() if not n.endswith("/"))

    def read(self, name):
        try:
            return self._zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"{self.description}: cannot read {name}: {e}") from e

    def close(self):
        self._zip.close()


_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def _candidate_paths(data_dir: str, dataset: str):
    """The places a data set may be: the folders themselves, then archives in them."""
    if os.path.isfile(data_dir):
        yield data_dir
        return
    folders = [data_dir]
    sub = os.path.join(data_dir, dataset)
    if os.path.isdir(sub):
        folders.insert(0, sub)
    yield from folders
    for folder in folders:
        for f in sorted(os.listdir(folder)):
            path = os.path.join(folder, f)
            if os.path.isfile(path) and f.endswith(_ARCHIVE_SUFFIXES):
                yield path


def _open_archive(path: str) -> _Source:
    if path.endswith(".zip"):
        return _ZipSource(path)
    if path.endswith((".tar", ".tar.gz", ".tgz")):
        return _TarSource(path)
    raise DataError(f"{path} is a file but not a .tar, .tar.gz, .tgz or .zip archive")


# --------------------------------------------------------------------------------------
# MNIST (IDX)


def _parse_idx(raw: bytes, name: str, expected_ndim: int) -> np.ndarray:
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{name}: corrupt gzip data: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{name}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    if ndim != expected_ndim:
        raise DataError(f"{name}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(f"{name}: IDX header says {dims} ({expected} bytes) but the file "
                        f"holds {len(raw) - header} bytes (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _parse_mnist(source: _Source, split: str):
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        base = f"{prefix}-{kind}-ubyte"
        name = source.find([base, base + ".gz", f"{prefix}-{kind.replace('-', '.')}-ubyte",
                            f"{prefix}-{kind.replace('-', '.')}-ubyte.gz"])
        if name is None:
            raise _FormatNotHere(f"no {base}[.gz]")
        arrays.append(_parse_idx(source.read(name), f"{source.description}/{name}", ndim))
    images, labels = arrays
    return images[..., None], labels.astype(np.int64), ORIGINAL_ORDER


# --------------------------------------------------------------------------------------
# CIFAR-10 (python batches, binary batches, image folders)


def _parse_cifar10(source: _Source, split: str):
    files = (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
             if split == "train" else ["test_batch"])
    python_names = [source.find([f]) for f in files]
    if all(python_names):
        return (*_cifar_python(source, python_names), ORIGINAL_ORDER)
    binary_names = [source.find([f + ".bin"]) for f in files]
    if all(binary_names):
        return (*_cifar_binary(source, binary_names), ORIGINAL_ORDER)
    folder = "train" if split == "train" else "test"
    tree = _image_tree(source, folder)
    if tree:
        return (*_cifar_folders(source, tree), BY_CLASS_ORDER)
    raise _FormatNotHere(f"no CIFAR-10 python/binary batches or {folder}/<class>/ images")


def _cifar_python(source, names):
    images, labels = [], []
    for name in names:
        try:
            batch = pickle.loads(source.read(name), encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            lab = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as e:
            raise DataError(f"{source.description}/{name}: not a CIFAR-10 python batch ({e})") from e
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{source.description}/{name}: data has shape {data.shape}, "
                            f"expected [N, 3072]")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_binary(source, names):
    images, labels = [], []
    for name in names:
        raw = np.frombuffer(source.read(name), dtype=np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise DataError(f"{source.description}/{name}: {raw.size} bytes is not a whole number "
                            f"of 3073-byte CIFAR-10 records (truncated or corrupt)")
        rec = raw.reshape(-1, 3073)
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _image_tree(source: _Source, folder: str) -> dict[str, list[str]]:
    """{class name: sorted image paths} for `<...>/folder/<class>/<image>`, shallowest root."""
    by_root: dict[str, dict[str, list[str]]] = {}
    for n in source.names():
        parts = n.split("/")
        if len(parts) < 3 or parts[-3] != folder or not n.lower().endswith(_IMAGE_SUFFIXES):
            continue
        root = "/".join(parts[:-3])
        by_root.setdefault(root, {}).setdefault(parts[-2], []).append(n)
    if not by_root:
        return {}
    root = min(by_root, key=lambda r: (r.count("/") if r else -1, r))
    return {c: sorted(v) for c, v in by_root[root].items()}


def _decode_one(blob, channels):
    # JPEG with the accurate integer DCT, which is libjpeg's default (PIL, torchvision):
    # TensorFlow's default fast DCT shifts CIFAR-10 JPEG pixel means by about 1/255.
    return tf.cond(
        tf.io.is_jpeg(blob),
        lambda: tf.io.decode_jpeg(blob, channels=channels, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(blob, channels=channels, expand_animations=False))


def _decode_images(source: _Source, paths: list[str], channels: int) -> np.ndarray:
    blobs = [source.read(p) for p in paths]
    # Batched so that Python touches each batch, not each image (4x faster on CIFAR-10).
    batch = 512
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(blobs, dtype=tf.string))
    ds = ds.map(lambda b: _decode_one(b, channels), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).batch(batch)
    out = []
    try:
        for images in ds.as_numpy_iterator():
            out.append(images)
    except tf.errors.InvalidArgumentError as e:
        first = len(out) * batch
        raise DataError(f"{source.description}: cannot decode or stack the images "
                        f"{paths[first]} ... {paths[min(first + batch, len(paths)) - 1]} "
                        f"(corrupt file or differing sizes): {e.message}") from e
    return np.concatenate(out)


def _cifar_folders(source, tree):
    names = set(tree)
    if names == set(CIFAR10_CLASSES):
        classes = list(CIFAR10_CLASSES)  # Original CIFAR-10 label order.
    elif len(names) == 10:
        classes = sorted(names)
    else:
        raise DataError(f"{source.description}: image-folder tree has {len(names)} class folders "
                        f"({', '.join(sorted(names)[:12])}), expected the 10 CIFAR-10 classes")
    paths = [p for c in classes for p in tree[c]]
    labels = np.asarray([i for i, c in enumerate(classes) for _ in tree[c]], np.int64)
    return _decode_images(source, paths, channels=3), labels


# --------------------------------------------------------------------------------------
# TinyImageNet


def _parse_tinyimagenet(source: _Source, split: str):
    wnids_name = source.find(["wnids.txt"])
    if wnids_name is None:
        raise _FormatNotHere("no wnids.txt")
    root = posixpath.dirname(wnids_name)
    prefix = root + "/" if root else ""
    wnids = source.read(wnids_name).decode().split()
    if len(wnids) != 200 or len(set(wnids)) != 200:
        raise DataError(f"{source.description}/{wnids_name}: {len(wnids)} class ids, expected "
                        f"200 distinct")
    index = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        paths, labels = [], []
        for n in source.names():
            parts = n[len(prefix):].split("/") if n.startswith(prefix) else []
            if (len(parts) == 4 and parts[0] == "train" and parts[2] == "images"
                    and n.lower().endswith(_IMAGE_SUFFIXES)):
                if parts[1] not in index:
                    raise DataError(f"{source.description}: {n} is in class {parts[1]}, "
                                    f"which is not in wnids.txt")
                paths.append(n)
                labels.append(index[parts[1]])
    else:
        ann_name = prefix + "val/val_annotations.txt"
        if ann_name not in set(source.names()):
            raise DataError(f"{source.description}: missing {ann_name}")
        paths, labels = [], []
        for line in source.read(ann_name).decode().splitlines():
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in index:
                raise DataError(f"{source.description}/{ann_name}: unknown class {fields[1]}")
            paths.append(prefix + "val/images/" + fields[0])
            labels.append(index[fields[1]])
    if not paths:
        raise DataError(f"{source.description}: no TinyImageNet {split} images under {prefix or '.'}")
    return _decode_images(source, paths, channels=3), np.asarray(labels, np.int64), ORIGINAL_ORDER


_PARSERS = {"mnist": _parse_mnist, "cifar10": _parse_cifar10, "tinyimagenet": _parse_tinyimagenet}


__all__ = ["DATASETS", "IMAGE_ORDERS", "SPLITS", "DataError", "DatasetInfo", "dataset_info",
           "image_order", "load_split", "make_pipeline", "split_indices", "to_float"]
