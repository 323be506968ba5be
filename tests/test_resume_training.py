"""A training run killed with SIGKILL and resumed ends where the uninterrupted run ends.

Each run is a real subprocess that trains tiny members (tests.helpers.tiny_splits) and is
killed by a real SIGKILL, at an epoch boundary (right after the epoch's checkpoint) or in the
middle of an epoch; a second process resumes from the checkpoint. The exported weights and
the members' recorded accuracies must equal those of a run that was never interrupted.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DRIVER = r"""
import json, os, signal, sys
import keras
from cear_tf.training import loop
from cear_tf.training import recipe
from tests.helpers import tiny_splits

kind, out, kill_epoch, kill_batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


class Kill(keras.callbacks.Callback):
    # Last in the callback list: at an epoch end the checkpoint is already written.
    def on_epoch_end(self, epoch, logs=None):
        if kill_batch < 0 and epoch == kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, batch, logs=None):
        if kill_batch >= 0 and self._epoch == kill_epoch and batch == kill_batch:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


callbacks = [Kill()] if kill_epoch >= 0 else []
splits = tiny_splits(n_train=72, n_val=16, n_test=24)
common = dict(dataset="mnist", epochs=4, batch_size=16, learning_rate=0.05, arch="lenet5")
if kind == "single":
    cfg = recipe.MemberConfig(role="gaussian", base_sigma=0.5, seed=3, augment="flip_crop",
                                **common)
    loop.train_member(cfg, splits, os.path.join(out, "member"), verbose=0,
                          extra_callbacks=callbacks, allow_collapsed=True, collapse_patience=0)
else:
    base = recipe.MemberConfig(role="gaussian", base_sigma=0.5, seed=3, **common)
    configs = recipe.ensemble_configs(base, [None, None], "gaussian", num_members=2)
    loop.train_fused_members(configs, splits, [os.path.join(out, f"member_{i}")
                                                   for i in range(2)], verbose=0,
                                 extra_callbacks=callbacks, allow_collapsed=True,
                                 collapse_patience=0)
"""


def _run(kind, out, kill_epoch=-1, kill_batch=-1):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", DRIVER, kind, str(out), str(kill_epoch),
                           str(kill_batch)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def _member(path):
    loaded = tf.saved_model.load(path)
    weights = sorted((v.name, v.numpy()) for v in loaded.variables)
    meta = json.load(open(os.path.join(path, "cear.json")))
    return weights, {k: meta[k] for k in ("clean_test_accuracy", "noisy_test_accuracy")}


def _members(out):
    return {d: _member(os.path.join(out, d)) for d in sorted(os.listdir(out))
            if os.path.exists(os.path.join(out, d, "cear.json"))}


def _assert_same(a, b):
    assert a.keys() == b.keys() and a
    for name in a:
        (wa, ma), (wb, mb) = a[name], b[name]
        assert ma == mb, name
        assert [n for n, _ in wa] == [n for n, _ in wb]
        for (n, x), (_, y) in zip(wa, wb):
            np.testing.assert_array_equal(x, y, err_msg=f"{name}: {n}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = {}
    for kind in ("single", "fused"):
        path = tmp_path_factory.mktemp(f"uninterrupted_{kind}")
        done = _run(kind, path)
        assert done.returncode == 0, done.stderr[-2000:]
        out[kind] = _members(str(path))
    return out


@pytest.mark.parametrize("kind", ["single", "fused"])
@pytest.mark.parametrize("kill_epoch,kill_batch", [(1, -1), (2, 2)],
                         ids=["at an epoch boundary", "in the middle of an epoch"])
def test_a_killed_and_resumed_run_trains_the_uninterrupted_members(reference, tmp_path, kind,
                                                                     kill_epoch, kill_batch):
    killed = _run(kind, tmp_path, kill_epoch, kill_batch)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not _members(str(tmp_path))  # nothing exported yet: the run really was cut
    resumed = _run(kind, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_same(_members(str(tmp_path)), reference[kind])


TRAIN_CLI = r"""
import os, signal, sys
from cear_tf.cli import launch
from cear_tf.ensemble import members
from cear_tf.cli import train
if sys.argv[1] == "kill_after_first_export":
    export = members.export_member

    def export_then_die(*args, **kwargs):
        export(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    members.export_member = export_then_die
sys.argv = ["cear_tf.cli.train", *sys.argv[2:]]
launch.run(train.main, train.define_flags, train.is_done)
"""


def test_a_fused_run_killed_between_its_exports_finishes_as_one_group(tmp_path):
    # The fused group exports its members one by one; a kill after the first must not make
    # the resume train the second alone (another group: other noise, other weights).
    from tests import data_fakes as fakes
    data = tmp_path / "mnist"
    fakes.write_mnist(data, n_train=80, n_test=8)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")

    def train(out, mode="plain"):
        return subprocess.run(
            [sys.executable, "-c", TRAIN_CLI, mode, "--dataset=mnist", f"--data_dir={data}",
             "--validation_size=16", "--role=ensemble", "--member_role=gaussian",
             "--num_members=2", "--sigma=0.5", "--epochs=2", "--batch_size=16",
             "--allow_collapsed", "--collapse_patience=0", f"--model_dir={out}",
             "--verbose=0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    reference = train(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = train(tmp_path / "killed", "kill_after_first_export")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(_members(str(tmp_path / "killed"))) == ["member_0"]
    resumed = train(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "finishing the fused run" in resumed.stderr
    _assert_same(_members(str(tmp_path / "killed")), _members(str(tmp_path / "reference")))
