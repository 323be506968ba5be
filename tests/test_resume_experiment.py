"""Runs repeat exactly: the same experiment run twice trains the same members (every weight
equal), writes the same certify logs (every column but the wall-clock time) and the same
files of weights, and prints the same table; and a whole experiment killed with SIGKILL at
random moments and then run to the end does the same as a run that was never interrupted.

The fast test runs a tiny experiment (fake MNIST, a Gaussian network and a fused ensemble of
two, certification of both); the slow one runs the quick job (flags/mnist_quick.toml,
real MNIST, ~8 minutes uninterrupted). Kill moments come from a seeded generator, so a
failure reproduces.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import data_fakes as fakes
from tests.helpers import rows_without_time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """
title = "tiny"
dataset = "mnist"
sigma = 0.25
output_dir = "{out}"
validation_size = 20
[train]
epochs = 2
batch_size = 16
allow_collapsed = true
collapse_patience = 0
[members.rs]
role = "gaussian"
[members.pair]
role = "ensemble"
member_role = "gaussian"
num_members = 2
[certify]
N0 = 10
N = 100
batch = 100
max = 6
[methods.rs]
label = "RandSmooth"
members = "rs"
aggregation = "single"
[methods.pair]
label = "pair (mean)"
members = "pair"
aggregation = "mean"
[table]
radii = [0, 0.1, 0.2]
"""

# The RW weights, fitted on noisy validation images, are a stage of their own.
TINY_RW_METHOD = """
[methods.pair_rw]
label = "pair (RW)"
members = "pair"
aggregation = "rw"
"""


def _command(experiment, data_dir):
    return [sys.executable, "-m", "cear_tf.cli.run", f"--experiment={experiment}",
            f"--data_dir={data_dir}"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)


def _table(stdout):
    return [line for line in stdout.splitlines() if line.startswith("|")]


def _members(root):
    out = {}
    for folder, _, files in sorted(os.walk(root)):
        if "saved_model.pb" in files and "cear.json" in files:
            loaded = tf.saved_model.load(folder)
            out[os.path.relpath(folder, root)] = sorted((v.name, v.numpy())
                                                        for v in loaded.variables)
    return out


def _killed_then_finished(command, cwd, moments, log):
    """Starts `command`, kills its whole process group with SIGKILL after each of `moments`
    seconds (restarting it after each kill), then lets it finish; returns the last stdout."""
    kills = 0
    for wait in moments:
        proc = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(wait)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True,
                           timeout=3600)
    assert final.returncode == 0, final.stderr[-3000:]
    log.append(kills)
    return final.stdout


def _compare(reference_root, resumed_root, reference_out, resumed_out):
    assert _table(resumed_out) == _table(reference_out) and _table(reference_out)
    want, got = _members(reference_root), _members(resumed_root)
    assert sorted(got) == sorted(want) and want
    for name in want:
        assert [n for n, _ in got[name]] == [n for n, _ in want[name]], name
        for (n, a), (_, b) in zip(want[name], got[name]):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{name}: {n}"


def _files(root, suffix):
    return sorted(os.path.relpath(os.path.join(folder, f), root)
                  for folder, _, files in os.walk(root) for f in files if f.endswith(suffix))


def test_the_same_experiment_twice_gives_the_same_members_logs_weights_and_table(tmp_path):
    data = tmp_path / "mnist"
    fakes.write_mnist(data, n_train=120, n_test=8)
    runs = {}
    for name in ("first", "second"):
        out = tmp_path / name
        experiment = tmp_path / f"{name}.toml"
        experiment.write_text(TINY.format(out=out) + TINY_RW_METHOD)
        done = subprocess.run(_command(str(experiment), str(data)), cwd=REPO, env=_env(),
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = (out, done.stdout)
    (first, first_out), (second, second_out) = runs["first"], runs["second"]
    _compare(first, second, first_out, second_out)
    logs = _files(first, ".tsv")
    assert logs == _files(second, ".tsv") and len(logs) == 3
    for log in logs:
        assert rows_without_time(first / log) == rows_without_time(second / log), log
    weights = [f for f in _files(first, ".json") if os.path.basename(f).startswith("weights_")]
    assert weights
    for path in weights:
        # Everything but the members' digests, which hash saved_model.pb: TensorFlow writes a
        # graph's nodes in an order that differs from one export to the next (even of one
        # model in one process), so two exports of equal weights have different digests.
        want, got = (json.loads((run / path).read_text()) for run in (first, second))
        want.pop("member_digests"), got.pop("member_digests")
        assert got == want, path


def test_a_tiny_experiment_killed_at_random_moments_ends_as_an_uninterrupted_run(tmp_path):
    data = tmp_path / "mnist"
    fakes.write_mnist(data, n_train=120, n_test=8)
    runs = {}
    for name in ("uninterrupted", "killed"):
        out = tmp_path / name
        experiment = tmp_path / f"{name}.toml"
        experiment.write_text(TINY.format(out=out))
        runs[name] = (out, _command(str(experiment), str(data)))
    start = time.time()
    reference = subprocess.run(runs["uninterrupted"][1], cwd=REPO, env=_env(),
                               capture_output=True, text=True, timeout=1200)
    assert reference.returncode == 0, reference.stderr[-3000:]
    # Kill moments within the first half of an uninterrupted run's duration: the first kill
    # always cuts; the later ones cut what is left, if anything.
    moments = (time.time() - start) * np.random.default_rng(5).uniform(0.1, 0.5, size=4)
    kills = []
    resumed = _killed_then_finished(runs["killed"][1], REPO, moments, kills)
    assert kills[0] >= 1
    _compare(runs["uninterrupted"][0], runs["killed"][0], reference.stdout, resumed)


@pytest.mark.slow
def test_the_quick_job_killed_at_random_moments_ends_as_an_uninterrupted_run(tmp_path,
                                                                            mnist_dir):
    runs = {}
    for name in ("uninterrupted", "killed"):
        out = tmp_path / name
        runs[name] = (out, [sys.executable, "-m", "cear_tf.cli.run",
                            "--experiment=flags/mnist_quick.toml",
                            f"--data_dir={os.path.dirname(mnist_dir)}", f"--output_dir={out}"])
    start = time.time()
    reference = subprocess.run(runs["uninterrupted"][1], cwd=REPO, env=_env(),
                               capture_output=True, text=True, timeout=3600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    # What the README shows is what the job prints today.
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    shown = readme.split("What the default job prints today", 1)[1].split("```")[1]
    assert _table(reference.stdout) == _table(shown), "README's quick-run table is stale"
    moments = (time.time() - start) * np.random.default_rng(8).uniform(0.05, 0.3, size=8)
    kills = []
    resumed = _killed_then_finished(runs["killed"][1], REPO, moments, kills)
    assert kills[0] >= 1
    _compare(runs["uninterrupted"][0], runs["killed"][0], reference.stdout, resumed)
