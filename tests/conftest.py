"""Shared test fixtures: the real data sets beside the repository, when present."""

import os
import pathlib
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoded-archive cache of cear_tf.data.datasets: a fresh folder per test session, not ~/.cache.
os.environ["CEAR_TF_CACHE"] = tempfile.mkdtemp(prefix="cear_tf_cache_")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so tf.distribute tests run a real MirroredStrategy on this machine.
# Must happen before TensorFlow initialises its devices, hence here, at collection time.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATASETS = pathlib.Path(
    os.environ.get("CEAR_TF_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def _has(sub: str, name: str) -> bool:
    return (SHARED_DATASETS / sub / name).exists()


@pytest.fixture(scope="session")
def mnist_dir():
    if not _has("mnist", "train-images-idx3-ubyte.gz"):
        pytest.skip(f"real MNIST not found under {SHARED_DATASETS}")
    return str(SHARED_DATASETS / "mnist")


@pytest.fixture(scope="session")
def cifar10_dir():
    if not _has("cifar10", "cifar10-jpeg.tar.gz"):
        pytest.skip(f"real CIFAR-10 not found under {SHARED_DATASETS}")
    return str(SHARED_DATASETS / "cifar10")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
