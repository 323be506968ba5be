"""Data sets from local files, with no network: the standard formats of MNIST (IDX),
CIFAR-10 (python or binary batches, or an image-folder tree) and TinyImageNet
(tiny-imagenet-200), as a directory or a .tar/.tar.gz/.tgz/.zip archive, with a cache of
the decoded arrays for archives (see cear_tf.data.datasets for the formats).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import posixpath
import tarfile
import zipfile
from typing import Iterable

import numpy as np
import tensorflow as tf

from cear_tf.config.choices import BY_CLASS_ORDER, ORIGINAL_ORDER

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """A local data set is missing, unreadable or not what its format promises."""


def load_local(info, split: str, data_dir: str):
    """(images uint8 [N, H, W, C], labels int64 [N], order) of `split` of the data set
    `info` (a datasets.DatasetInfo) from the first local copy found under data_dir."""
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
