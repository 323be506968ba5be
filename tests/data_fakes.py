"""Writers of small data sets in each standard on-disk format, for loader tests."""

import gzip
import os
import pickle
import tarfile
import zipfile

import numpy as np
import tensorflow as tf

from cear_tf.data.local_files import CIFAR10_CLASSES


def write_idx(path, array, compress=False):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(raw) if compress else raw)


def write_mnist(root, n_train=30, n_test=20, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    arrays = {}
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{suffix}"), images, compress)
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{suffix}"), labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


def _cifar_arrays(rng, n):
    return (rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=n).astype(np.int64))


def _write_cifar_batches(root, folder, suffix, write_batch, per_batch, n_test, seed):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, folder)
    os.makedirs(folder, exist_ok=True)
    train = []
    for i in range(1, 6):
        arrays = _cifar_arrays(rng, per_batch)
        write_batch(os.path.join(folder, f"data_batch_{i}{suffix}"), *arrays)
        train.append(arrays)
    test = _cifar_arrays(rng, n_test)
    write_batch(os.path.join(folder, f"test_batch{suffix}"), *test)
    return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])), test


def write_cifar_python(root, per_batch=4, n_test=6, seed=0):
    return _write_cifar_batches(root, "cifar-10-batches-py", "", _pickle_batch, per_batch,
                                n_test, seed)


def _pickle_batch(path, images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": list(map(int, labels))}, f)


def write_cifar_binary(root, per_batch=4, n_test=6, seed=0):
    return _write_cifar_batches(root, "cifar-10-batches-bin", ".bin", _binary_batch, per_batch,
                                n_test, seed)


def _binary_batch(path, images, labels):
    rec = np.concatenate([labels.astype(np.uint8)[:, None],
                          images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)
    with open(path, "wb") as f:
        f.write(rec.tobytes())


def png_bytes(image):
    return tf.io.encode_png(image).numpy()


def write_image_tree(root, classes, per_class, shape, seed=0, layout=None):
    """Writes PNGs to `layout(split, class, i)` paths; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    layout = layout or (lambda split, c, i: f"{split}/{c}/{i:04d}.png")
    out = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, c in enumerate(classes):
            for i in range(per_class):
                image = rng.integers(0, 256, size=shape, dtype=np.uint8)
                path = os.path.join(root, layout(split, c, i))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(png_bytes(image))
                images.append(image)
                labels.append(label)
        out[split] = (np.stack(images), np.asarray(labels))
    return out


def write_cifar_folders(root, per_class=2, seed=0):
    return write_image_tree(root, CIFAR10_CLASSES, per_class, (32, 32, 3), seed)


def write_tinyimagenet(root, per_class=1, seed=0):
    """A 200-class tiny-imagenet-200 tree with `per_class` train and val images per class."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "tiny-imagenet-200")
    wnids = [f"n{i:08d}" for i in range(200)]
    os.makedirs(os.path.join(base, "val", "images"), exist_ok=True)
    with open(os.path.join(base, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    train_images, train_labels, val_images, val_labels, ann = [], [], [], [], []
    for label, w in enumerate(wnids):
        folder = os.path.join(base, "train", w, "images")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            with open(os.path.join(folder, f"{w}_{i}.png"), "wb") as f:
                f.write(png_bytes(image))
            train_images.append(image)
            train_labels.append(label)
            val = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
            name = f"val_{label * per_class + i}.png"
            with open(os.path.join(base, "val", "images", name), "wb") as f:
                f.write(png_bytes(val))
            ann.append(f"{name}\t{w}\t0\t0\t63\t63")
            val_images.append(val)
            val_labels.append(label)
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as f:
        f.write("\n".join(ann) + "\n")
    return ((np.stack(train_images), np.asarray(train_labels)),
            (np.stack(val_images), np.asarray(val_labels)))


def tar_folder(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, name), arcname=name)


def zip_folder(folder, archive):
    with zipfile.ZipFile(archive, "w") as z:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(dirpath, f)
                z.write(full, os.path.relpath(full, folder))


