import gzip
import os
import shutil

import numpy as np
import pytest

from cear_tf.config import choices
from cear_tf.data import datasets
from tests import data_fakes as fakes


@pytest.fixture(autouse=True)
def _fresh_cache():
    # The loader memoises decoded sets per (path, mtime); tests rewrite folders quickly.
    datasets._load_official_cached.cache_clear()
    yield


def _u8(x):
    return np.round(x * 255).astype(np.uint8)


# ---- generated files, one per format --------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx(tmp_path, compress):
    arrays = fakes.write_mnist(tmp_path / "mnist", compress=compress)
    # data_dir may be the folder itself or its parent (data_dir/<dataset>).
    for root in (tmp_path, tmp_path / "mnist"):
        datasets._load_official_cached.cache_clear()
        x, y = datasets.load_split("mnist", "test", str(root), validation_size=0)
        assert x.dtype == np.float32 and x.shape == (20, 28, 28, 1)
        assert 0.0 <= x.min() and x.max() <= 1.0
        np.testing.assert_array_equal(_u8(x)[..., 0], arrays["t10k"][0])
        np.testing.assert_array_equal(y, arrays["t10k"][1])


def test_train_validation_split_is_disjoint_and_fixed(tmp_path):
    arrays = fakes.write_mnist(tmp_path, n_train=50)
    xt, yt = datasets.load_split("mnist", "train", str(tmp_path), validation_size=10, split_seed=3)
    xv, yv = datasets.load_split("mnist", "validation", str(tmp_path), validation_size=10, split_seed=3)
    assert len(xt) == 40 and len(xv) == 10
    val_idx, train_idx = datasets.split_indices(50, 10, 3)
    assert not set(val_idx) & set(train_idx)
    assert sorted(np.concatenate([val_idx, train_idx]).tolist()) == list(range(50))
    np.testing.assert_array_equal(_u8(xv)[..., 0], arrays["train"][0][val_idx])
    np.testing.assert_array_equal(yt, arrays["train"][1][train_idx])
    # Same seed, same split; another seed, another split.
    xv2, _ = datasets.load_split("mnist", "validation", str(tmp_path), validation_size=10, split_seed=3)
    np.testing.assert_array_equal(xv, xv2)
    assert not np.array_equal(datasets.split_indices(50, 10, 4)[0], val_idx)


@pytest.mark.parametrize("writer", [fakes.write_cifar_python, fakes.write_cifar_binary])
def test_cifar_batches(tmp_path, writer):
    train, test = writer(tmp_path)
    x, y = datasets.load_split("cifar10", "train", str(tmp_path), validation_size=0)
    np.testing.assert_array_equal(_u8(x), train[0])
    np.testing.assert_array_equal(y, train[1])
    x, y = datasets.load_split("cifar10", "test", str(tmp_path))
    np.testing.assert_array_equal(_u8(x), test[0])


@pytest.mark.parametrize("archive", [None, "tar", "zip"])
def test_cifar_image_folders_dir_and_archives(tmp_path, archive):
    src = tmp_path / "src"
    out = fakes.write_cifar_folders(src)
    root = src
    if archive:
        root = tmp_path / "packed"
        root.mkdir()
        if archive == "tar":
            fakes.tar_folder(src, root / "cifar10-png.tar.gz")
        else:
            fakes.zip_folder(src, root / "cifar10-png.zip")
    x, y = datasets.load_split("cifar10", "test", str(root))
    # Labels follow the original CIFAR-10 class order, not the folders' alphabetical order.
    np.testing.assert_array_equal(y, out["test"][1])
    np.testing.assert_array_equal(_u8(x), out["test"][0])


def test_archive_decode_is_cached_and_invalidated(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CEAR_TF_CACHE", str(cache))
    src, packed = tmp_path / "src", tmp_path / "packed"
    packed.mkdir()
    out = fakes.write_cifar_folders(src, seed=1)
    archive = packed / "c.tar.gz"
    fakes.tar_folder(src, archive)
    x1, _ = datasets.load_split("cifar10", "test", str(packed))
    assert len(list(cache.glob("cifar10-test-*.npz"))) == 1
    datasets._load_official_cached.cache_clear()
    np.testing.assert_array_equal(datasets.load_split("cifar10", "test", str(packed))[0], x1)
    # A rewritten archive (new size/mtime) is decoded again, not served stale from the cache.
    shutil.rmtree(src)
    out2 = fakes.write_cifar_folders(src, seed=2)
    fakes.tar_folder(src, archive)
    os.utime(archive, ns=(1, 10**18))
    datasets._load_official_cached.cache_clear()
    x2, _ = datasets.load_split("cifar10", "test", str(packed))
    np.testing.assert_array_equal(_u8(x2), out2["test"][0])
    assert not np.array_equal(out["test"][0], out2["test"][0])
    monkeypatch.setenv("CEAR_TF_CACHE", "off")
    datasets._load_official_cached.cache_clear()
    datasets.load_split("cifar10", "test", str(packed))
    assert len(list(cache.glob("*.npz"))) == 2


def test_image_order_says_whether_index_i_is_the_official_image_i(tmp_path):
    # Published per-index selections (the authors' certify script's test images 2160, 2180,
    # ...) name the same images only in the release's own order.
    fakes.write_mnist(tmp_path / "mnist")
    assert datasets.image_order("mnist", str(tmp_path / "mnist")) == "original"
    for writer in (fakes.write_cifar_python, fakes.write_cifar_binary):
        writer(tmp_path / writer.__name__)
        assert datasets.image_order("cifar10", str(tmp_path / writer.__name__)) == "original"
    out = fakes.write_cifar_folders(tmp_path / "folders")
    assert datasets.image_order("cifar10", str(tmp_path / "folders")) == "by_class"
    assert (np.diff(out["test"][1]) >= 0).all()  # class by class: the original order is lost
    assert set(choices.IMAGE_ORDERS) == {"original", "by_class", "tfds"}


def test_a_cache_without_the_image_order_is_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("CEAR_TF_CACHE", str(tmp_path / "cache"))
    src, packed = tmp_path / "src", tmp_path / "packed"
    packed.mkdir()
    out = fakes.write_cifar_folders(src)
    fakes.tar_folder(src, packed / "c.tar.gz")
    assert datasets.image_order("cifar10", str(packed)) == "by_class"
    (cache,) = (tmp_path / "cache").glob("cifar10-test-*.npz")
    with np.load(cache) as z:  # as written before orders were recorded
        np.savez(cache, images=z["images"], labels=z["labels"])
    datasets._load_official_cached.cache_clear()
    assert datasets.image_order("cifar10", str(packed)) == "by_class"
    np.testing.assert_array_equal(_u8(datasets.load_split("cifar10", "test", str(packed))[0]),
                                  out["test"][0])
    with np.load(cache) as z:
        assert str(z["order"]) == "by_class"


@pytest.mark.parametrize("archive", [None, "zip"])
def test_tinyimagenet_layout(tmp_path, archive):
    (train, val) = fakes.write_tinyimagenet(tmp_path / "src")
    root = tmp_path / "src"
    if archive:
        root = tmp_path / "tiny-imagenet-200.zip"
        fakes.zip_folder(tmp_path / "src", root)
    x, y = datasets.load_split("tinyimagenet", "test", str(root))
    assert x.shape == (200, 64, 64, 3)
    np.testing.assert_array_equal(_u8(x), val[0])
    np.testing.assert_array_equal(y, val[1])
    x, y = datasets.load_split("tinyimagenet", "train", str(root), validation_size=20)
    assert len(x) == 180 and set(y.tolist()) <= set(range(200))


def test_pipeline_shuffles_batches_and_keeps_pairs(rng):
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    labels = np.arange(10)
    ds = datasets.make_pipeline(images, labels, batch_size=4, shuffle=True, seed=1,
                            epochs=range(2))
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    epoch1, epoch2 = batches[:3], batches[3:]
    assert [len(y) for _, y in batches] == [4, 4, 2, 4, 4, 2]  # no batch spans two epochs
    for x, y in epoch1:
        np.testing.assert_array_equal(x.reshape(-1), y)
    order1 = np.concatenate([y for _, y in epoch1])
    order2 = np.concatenate([y for _, y in epoch2])
    assert sorted(order1) == list(range(10))
    assert not np.array_equal(order1, order2)  # reshuffled each epoch
    with pytest.raises(ValueError, match="batch_size"):
        datasets.make_pipeline(images, labels, batch_size=0, shuffle=False)


@pytest.mark.parametrize("augment", ["none", "flip_crop"])
def test_a_pipeline_started_at_epoch_k_yields_the_full_runs_batches_from_k(augment):
    # What a resumed training run sees: epoch e's order and augmentation depend on (seed, e).
    images = np.random.default_rng(0).random((11, 6, 6, 1)).astype(np.float32)
    labels = np.arange(11)
    full = [b for b in datasets.make_pipeline(images, labels, 4, shuffle=True, seed=3,
                                          augment=augment, epochs=range(0, 4))]
    resumed = [b for b in datasets.make_pipeline(images, labels, 4, shuffle=True, seed=3,
                                             augment=augment, epochs=range(2, 4))]
    assert len(full) == 12 and len(resumed) == 6
    for (x, y), (rx, ry) in zip(full[6:], resumed):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)
    other_seed = [b for b in datasets.make_pipeline(images, labels, 4, shuffle=True, seed=4,
                                                augment=augment, epochs=range(2, 4))]
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(resumed, other_seed))
    with pytest.raises(ValueError, match="epochs"):
        datasets.make_pipeline(images, labels, 4, shuffle=True, epochs=range(3, 3))


def test_pipelines_run_without_autotune_and_keep_seeded_order():
    # Autotuning made iterator teardown wait for its tuner thread (datasets.without_autotune).
    images = np.arange(40, dtype=np.float32).reshape(10, 2, 2, 1)
    labels = np.arange(10)
    for augment in ("none", "flip_crop"):
        ds = datasets.make_pipeline(images, labels, batch_size=3, shuffle=True, seed=4,
                                augment=augment)
        assert ds.options().autotune.enabled is False
        again = datasets.make_pipeline(images, labels, batch_size=3, shuffle=True, seed=4,
                                   augment=augment)
        np.testing.assert_array_equal(np.concatenate([y for _, y in ds]),
                                      np.concatenate([y for _, y in again]))


# ---- errors name the path and what was expected ---------------------------------------


def test_missing_files_name_path_and_expected(tmp_path):
    with pytest.raises(datasets.DataError, match=r"no mnist data found under .*train-images-idx3"):
        datasets.load_split("mnist", "test", str(tmp_path))
    with pytest.raises(datasets.DataError, match="does not exist"):
        datasets.load_split("mnist", "test", str(tmp_path / "nope"))


def test_corrupt_and_truncated_files(tmp_path):
    fakes.write_mnist(tmp_path, compress=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(datasets.DataError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        datasets.load_split("mnist", "test", str(tmp_path))
    path.write_bytes(path.read_bytes()[:50])  # broken gzip stream
    datasets._load_official_cached.cache_clear()
    with pytest.raises(datasets.DataError, match="t10k-images-idx3-ubyte.gz"):
        datasets.load_split("mnist", "test", str(tmp_path))


def test_wrong_shape_and_label_range_are_errors(tmp_path):
    fakes.write_mnist(tmp_path)
    fakes.write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(datasets.DataError, match=r"shape \(20, 32, 32, 1\).*28, 28, 1"):
        datasets.load_split("mnist", "test", str(tmp_path))
    fakes.write_mnist(tmp_path)
    fakes.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(20, 12, np.uint8))
    datasets._load_official_cached.cache_clear()
    with pytest.raises(datasets.DataError, match=r"labels span \[12, 12\], expected \[0, 9\]"):
        datasets.load_split("mnist", "test", str(tmp_path))
    fakes.write_mnist(tmp_path)
    fakes.write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(19, np.uint8))
    datasets._load_official_cached.cache_clear()
    with pytest.raises(datasets.DataError, match="20 images but 19 labels"):
        datasets.load_split("mnist", "test", str(tmp_path))


def test_cifar_bad_files(tmp_path):
    fakes.write_cifar_binary(tmp_path)
    p = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(datasets.DataError, match="test_batch.bin.*3073-byte"):
        datasets.load_split("cifar10", "test", str(tmp_path))
    shutil.rmtree(tmp_path / "cifar-10-batches-bin")
    fakes.write_cifar_folders(tmp_path)
    (tmp_path / "test" / "cat" / "0000.png").write_bytes(b"not an image")
    datasets._load_official_cached.cache_clear()
    with pytest.raises(datasets.DataError, match="cannot decode"):
        datasets.load_split("cifar10", "test", str(tmp_path))


def test_bad_arguments():
    with pytest.raises(ValueError, match="mnist, cifar10, tinyimagenet"):
        datasets.load_split("svhn", "test")
    with pytest.raises(ValueError, match="train, validation, test"):
        datasets.load_split("mnist", "dev")
    with pytest.raises(datasets.DataError, match="not in tensorflow-datasets.*--data_dir"):
        datasets.load_split("tinyimagenet", "test")


def test_validation_size_bounds(tmp_path):
    fakes.write_mnist(tmp_path, n_train=30)
    with pytest.raises(ValueError, match="validation_size"):
        datasets.load_split("mnist", "train", str(tmp_path), validation_size=30)
    with pytest.raises(ValueError, match="validation split is empty"):
        datasets.load_split("mnist", "validation", str(tmp_path), validation_size=0)


# ---- the real data sets, when present --------------------------------------------------


def test_real_mnist(mnist_dir):
    x, y = datasets.load_split("mnist", "train", mnist_dir, validation_size=0)
    assert x.shape == (60000, 28, 28, 1)
    assert abs(float(x.mean()) - 0.1307) < 5e-4 and abs(float(x.std()) - 0.3081) < 5e-4
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
    x, y = datasets.load_split("mnist", "test", mnist_dir)
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    xv, _ = datasets.load_split("mnist", "validation", mnist_dir, validation_size=5000)
    assert len(xv) == 5000


def test_real_cifar10_test(cifar10_dir):
    x, y = datasets.load_split("cifar10", "test", cifar10_dir)
    assert x.shape == (10000, 32, 32, 3)
    assert np.bincount(y).tolist() == [1000] * 10
    assert abs(float(x.mean()) - 0.4765) < 5e-4  # decoded mean stated in the data README


def _fake_tfds(monkeypatch, download_error):
    """A tensorflow_datasets module with nothing prepared whose downloads raise."""
    import sys
    import types
    fake = types.ModuleType("tensorflow_datasets")

    def load(name, split, as_supervised, download=True):
        if not download:
            raise AssertionError(f"Dataset {name}: could not find data in /nowhere.")
        raise download_error

    fake.load = load
    fake.as_numpy = lambda x: x
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)


def test_tfds_path_fails_in_one_clear_line(monkeypatch):
    import sys
    import time

    from cear_tf.data import datasets as data_lib
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(data_lib.DataError, match=r"cannot be imported .*pass --data_dir"):
        data_lib.load_split("mnist", "test", None, 0, 0)
    # Offline: nothing prepared and the download server unreachable (a closed local port).
    _fake_tfds(monkeypatch, AssertionError("must not try to download"))
    monkeypatch.setattr(data_lib, "TFDS_HOST", ("127.0.0.1", 9))
    start = time.time()
    with pytest.raises(data_lib.DataError) as error:
        data_lib.load_split("mnist", "test", None, 0, 0)
    assert time.time() - start < 30
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("mnist: no local copy was given (--data_dir)")
    assert "cannot reach 127.0.0.1" in message and "$DATA_DIR" in message
    # The server answers but the download fails.
    _fake_tfds(monkeypatch, ConnectionError("Failed to establish a new connection"))
    monkeypatch.setattr(data_lib, "_check_download_server", lambda info, hint: None)
    with pytest.raises(data_lib.DataError, match=r"could not load mnist .*offline machines: "
                                                 r"pass --data_dir"):
        data_lib.load_split("mnist", "test", None, 0, 0)


def test_tfds_path_with_mock_data_loads_splits_and_trains(tmp_path):
    """The tensorflow-datasets source end to end, offline: tfds' mock data stands in for
    MNIST, and a teacher trains on it through the same code as on real data."""
    import json

    import tensorflow_datasets as tfds

    from cear_tf.cli import train
    from cear_tf.data import datasets as data_lib
    from tests.helpers import parse_flags
    with tfds.testing.mock_data(num_examples=48):
        x, y = data_lib.load_split("mnist", "test", None, 0, 0)
        assert x.shape == (48, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
        assert y.shape == (48,) and 0 <= y.min() and y.max() <= 9
        train_x, _ = data_lib.load_split("mnist", "train", None, 8, 0)
        val_x, _ = data_lib.load_split("mnist", "validation", None, 8, 0)
        assert len(train_x) == 40 and len(val_x) == 8
        out = tmp_path / "teacher"
        parse_flags(["--role=teacher", "--epochs=1", "--batch_size=16", "--validation_size=8",
                     f"--model_dir={out}", "--verbose=0", "--allow_collapsed"], train)
        train.main(["prog"])
    meta = json.load(open(out / "cear.json"))
    assert meta["role"] == "teacher" and meta["train_examples"] == 40
