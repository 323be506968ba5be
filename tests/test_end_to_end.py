"""Slow end-to-end runs on the real data sets (pytest -m slow); minutes each on 2 cores."""

import os
import shutil
import subprocess
import sys

import pytest

from cear_tf.ensemble import members
from cear_tf.training import loop, recipe
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_real_mnist_teacher_and_vga_student(mnist_dir, tmp_path):
    """Issue acceptance: LeNet-5 teacher >= 98.5%, student (sigma .25, T 3, VGA) >= 97%."""
    splits = recipe.load_splits("mnist", mnist_dir, 5000, 0)
    teacher_cfg = recipe.MemberConfig(role="teacher", arch="lenet5", dataset="mnist", seed=0,
                                     epochs=10, learning_rate=0.05, lr_schedule="cosine")
    meta = loop.train_member(teacher_cfg, splits, str(tmp_path / "teacher"), verbose=2)
    assert meta["clean_test_accuracy"] >= 0.985
    teacher = members.load_member(str(tmp_path / "teacher"))
    student_cfg = recipe.MemberConfig(role="student", arch="lenet5", dataset="mnist", seed=0,
                                     base_sigma=0.25, vga=True, temperature=3.0, epochs=10,
                                     learning_rate=0.01, lr_schedule="cosine")
    meta = loop.train_member(student_cfg, splits, str(tmp_path / "student"), teacher, verbose=2)
    assert meta["clean_test_accuracy"] >= 0.97
    assert 0.125 <= meta["sigma"] <= 0.375


def test_run_all_quick_prints_table(mnist_dir, tmp_path):
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "run_all.sh", work)
    shutil.copytree(REPO / "flags", work / "flags")
    env = dict(os.environ, DATA_DIR=os.path.dirname(mnist_dir), PYTHON=sys.executable)
    out = subprocess.run(["bash", str(work / "run_all.sh")], env=env, capture_output=True,
                         text=True, check=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("| CEAR(GM)")]
    assert lines, out.stdout + out.stderr[-3000:]
    ca0 = float(lines[0].split("|")[3])
    assert ca0 >= 90.0  # certified accuracy at r = 0 of a working ensemble on MNIST
