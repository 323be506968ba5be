"""scripts/mnist_ablation.sh end to end on a tiny fake MNIST: every kind of variant (one
that retrains all rows, one that retrains only CEAR, one that only certifies differently,
one with its own teacher and network, and all of them on that network's teacher) runs, reuses the base rows it does not change, and
the report's ablation table reads the result."""

import os
import subprocess

import numpy as np
import pytest

from cear_tf.reporting import ablation
from tests import data_fakes as fakes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_ablation_driver_runs_every_kind_of_variant(tmp_path):
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=600, n_test=40)
    # Every label 3: members learn "3" at once, so RW weights (certified accuracy on the
    # validation split) are defined.
    fakes.write_idx(data_dir / "t10k-labels-idx1-ubyte", np.full(40, 3, np.uint8))
    fakes.write_idx(data_dir / "train-labels-idx1-ubyte", np.full(600, 3, np.uint8))
    root = tmp_path / "abl"
    teacher = tmp_path / "teacher"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", DATA_DIR=str(data_dir),
               ABLATION_ROOT=str(root), ABLATION_TEACHER=str(teacher),
               ABLATION_IMAGE_PASSES="--max=10 --skip=5;--max=20 --skip=5",
               ABLATION_EXTRA="--epochs=4 --learning_rate=0.1 --N=200 --N0=20 --num_images=4 "
                              "--validation_size=50 --allow_collapsed --batch_size=64 "
                              "--undefok=epochs,learning_rate,N,N0,num_images,"
                              "allow_collapsed,batch_size")
    python = os.path.join(REPO, ".venv", "bin", "python")
    subprocess.run([python if os.path.exists(python) else "python3", "-m", "cear_tf.cli.train",
                    f"--data_dir={data_dir}", "--role=teacher", "--epochs=1",
                    f"--model_dir={teacher}", "--validation_size=50", "--allow_collapsed",
                    "--verbose=0"], cwd=REPO, env=env, check=True, capture_output=True)
    out = subprocess.run(["bash", "scripts/mnist_ablation.sh", "base", "vga_rule",
                          "certify_clip", "network", "all"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(root / "base" / "certify")) == sorted(
        f"{row}.tsv{suffix}" for row in ("randsmooth", "cear_rw", "cear_minus_rw")
        for suffix in ("", ".json"))  # the .lock files deleted with their release
    # vga_rule retrains CEAR only; certify_clip retrains nothing; network trains its own
    # teacher, which all reuses for its students.
    assert os.listdir(root / "vga_rule") and not os.path.exists(root / "vga_rule" / "cear_minus")
    assert not os.path.exists(root / "certify_clip" / "cear")
    assert (root / "network" / "teacher").exists()
    assert not os.path.exists(root / "all" / "teacher")
    assert os.listdir(root / "all" / "cear") and os.listdir(root / "all" / "randsmooth")
    text = ablation.ablation_section(str(root))
    assert "| + released VGA rule | RandSmooth (base) | 4 |" in text
    assert "| + clip in certification | CEAR(RW) | 4 |" in text
    assert "| all released choices | CEAR-(RW) | 4 |" in text


def test_every_driver_variant_has_its_file_and_a_report_label():
    import re
    script = open(os.path.join(REPO, "scripts", "mnist_ablation.sh")).read()
    variants = re.search(r"^variants=\(([^)]*)\)", script, re.M).group(1).split()
    assert variants == [v for v, _ in ablation.ABLATION_VARIANTS]
    for v in variants:
        name = "mnist_ablation_sigma100" + ("" if v == "base" else f"_{v}") + ".toml"
        assert os.path.isfile(os.path.join(REPO, "flags", name)), name


def test_pending_runs_refuse_an_unknown_part_before_any_run(tmp_path):
    # PYTHON points at a program that records being called: nothing may run.
    marker = tmp_path / "ran"
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake_python.chmod(0o755)
    out = subprocess.run(["bash", "scripts/mnist_pending_runs.sh", "pass2", "everything"],
                         cwd=REPO, env=dict(os.environ, PYTHON=str(fake_python)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "mnist_pending_runs.sh: unknown part 'everything' (known: pooled released literature "
        "pass2 attacks, issue36, issue37)"]
    assert not marker.exists()
