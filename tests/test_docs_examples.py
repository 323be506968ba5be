"""The Python examples of the README and docs/usage.md run as printed.

Each ```python block is executed in this process with only its sample sizes shrunk (N of
100,000 or 10,000 draws -> a few hundred) and its placeholder files (my_images.npy,
my_model.keras) made here, so a renamed module or function in an example fails a test.
"""

import os
import re

import keras
import numpy as np

from cear_tf import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(path):
    text = open(os.path.join(REPO, path), encoding="utf-8").read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _shrunk(code, files):
    code = re.sub(r"\bn=(100_000|10_000)\b", "n=300", code)
    for name, path in files.items():
        code = code.replace(f'"{name}"', repr(str(path)))
    return code


def test_readme_python_api_runs(tmp_path, monkeypatch):
    (block,) = [b for b in _python_blocks("README.md") if "certify_batch" in b]
    images = tmp_path / "my_images.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (2, 28, 28, 1), np.uint8))
    monkeypatch.chdir(REPO)
    namespace = {}
    exec(compile(_shrunk(block, {"my_images.npy": images}), "README.md", "exec"), namespace)
    certs, classes = namespace["certs"], namespace["classes"]
    assert len(certs.prediction) == len(classes) == 2
    assert np.all((certs.radius >= 0) & ((certs.prediction == -1) == (certs.radius == 0)))


def test_usage_python_examples_run(tmp_path, monkeypatch, mnist_dir):
    blocks = [b for b in _python_blocks("docs/usage.md") if "Smooth(" in b]
    assert len(blocks) == 2
    keras.utils.set_random_seed(0)
    model_path = tmp_path / "my_model.keras"
    models.build_model("lenet5", (28, 28, 1), 10).save(model_path)
    shared = os.path.dirname(mnist_dir)
    monkeypatch.chdir(REPO)
    exported_before = os.path.exists("exported")
    for block in blocks:
        code = _shrunk(block, {"my_model.keras": model_path}).replace(
            '"../shared/datasets"', repr(shared))
        namespace = {}
        exec(compile(code, "docs/usage.md", "exec"), namespace)
    results = namespace["results"]
    assert sorted(results) == ["gm", "rw"]
    assert all(len(r.prediction) == 2 for r in results.values())
    # The export example is a shell block, not run here: no Python example writes into the
    # repository (a user's own exported/ from running it is left alone).
    assert os.path.exists("exported") == exported_before, "an example wrote into the repository"
