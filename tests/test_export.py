"""The smoothed ensemble as one SavedModel (cear_tf.cli.export): served without cear_tf, it
gives the same PREDICT answers and vote counts as cear_tf's engine on the same noise."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import binomtest

from cear_tf.cli import export
from cear_tf.ensemble import loading
from cear_tf.smoothing import aggregate, served
from cear_tf.smoothing.core import Smooth
from cear_tf.smoothing.decisions import ABSTAIN
from cear_tf.smoothing.noise import Phase
from tests.helpers import HALVES_CLASSES as K
from tests.helpers import HALVES_SHAPE as SHAPE
from tests.helpers import halves_member, parse_flags


def _images():
    halves = [(1, 0), (0, 1), (0.5, 0.5), (0.6, 0.4), (0.51, 0.49), (0.3, 0.7), (0.45, 0.55),
              (0.8, 0.2)]
    out = np.zeros((len(halves), *SHAPE), np.float32)
    for i, (left, right) in enumerate(halves):
        out[i, :, :SHAPE[1] // 2] = left
        out[i, :, SHAPE[1] // 2:] = right
    return out


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "ens"
    for i, gain in enumerate((1.0, 1.2, 0.8)):
        halves_member(root / f"member_{i}", gain)
    return str(root)


_SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
x = tf.constant(np.load(sys.argv[2]))
ids = tf.constant(json.loads(sys.argv[3]), tf.int64)
keyed = model.signatures["predict_keyed"](images=x, image_ids=ids)
fresh = model.signatures["serving_default"](images=x)
assert not any(m.startswith("cear_tf") for m in sys.modules), "cear_tf was imported"
print(json.dumps({name: {k: v.numpy().tolist() for k, v in out.items()}
                  for name, out in (("keyed", keyed), ("fresh", fresh))}))
"""


def _serve(directory, images, ids, tmp_path):
    """Calls the exported SavedModel in a fresh Python that never imports cear_tf."""
    np.save(tmp_path / "images.npy", images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _SERVE, directory, str(tmp_path / "images.npy"),
                          json.dumps(ids)], capture_output=True, text=True, env=env,
                         cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("aggregation,clip,logit_noise", [("mean", False, 0.0),
                                                          ("mv", True, 0.2)])
def test_exported_predict_equals_engine_predict(ensemble_dir, tmp_path, aggregation, clip,
                                                logit_noise):
    loaded = loading.load_ensemble(loading.resolve_member_dirs([ensemble_dir]))
    smooth = Smooth(loaded, K, 0.5, [aggregate.make_aggregator(aggregation, 3)], clip=clip,
                    logit_noise=logit_noise, seed=7)
    n, alpha, batch = 250, 0.01, 64  # 250 = 3 full batches and one of 58
    directory = str(tmp_path / "smoothed")
    served.export_smoothed(smooth, SHAPE, directory, n, alpha, batch, {"test": True},
                           tracked=[m.saved_model for m in loaded])
    images = _images()
    ids = [0, 1, 2, 3, 4, 5, 2160, 2**40]
    answers = _serve(directory, images, ids, tmp_path)

    want_pred = [smooth.predict(x, n, alpha, 100, idx=i)[aggregation] for x, i in zip(images, ids)]
    want_counts = [smooth.sample_counts(x, n, 100, i, Phase.PREDICT)[aggregation].tolist()
                   for x, i in zip(images, ids)]
    assert answers["keyed"]["counts"] == want_counts
    assert answers["keyed"]["prediction"] == want_pred
    # The test means something only if both answers occur.
    assert ABSTAIN in want_pred and any(p != ABSTAIN for p in want_pred), want_pred
    for counts, p in zip(want_counts, answers["keyed"]["p_value"]):
        top = sorted(counts, reverse=True)
        assert p == pytest.approx(binomtest(top[0], top[0] + top[1], 0.5).pvalue, rel=1e-9)

    fresh = answers["fresh"]
    assert all(sum(c) == n for c in fresh["counts"])
    assert all(p == ABSTAIN or 0 <= p < K for p in fresh["prediction"])
    assert fresh["counts"] != answers["keyed"]["counts"]  # other noise than the keyed streams


def test_binomial_p_value_matches_scipy():
    pairs = [(1, 0), (5, 5), (6, 4), (10, 0), (60, 40), (520, 480), (999, 1), (50, 49), (3, 2)]
    got = served.binomial_test_p_value(tf.constant([a for a, _ in pairs]),
                                       tf.constant([b for _, b in pairs])).numpy()
    for (a, b), p in zip(pairs, got):
        assert p == pytest.approx(binomtest(a, a + b, 0.5).pvalue, rel=1e-9, abs=1e-300), (a, b)


def test_export_cli_writes_settings_and_refuses_several_aggregations(ensemble_dir, tmp_path):
    from absl import app
    out = tmp_path / "cli_export"
    parse_flags([f"--models={ensemble_dir}", "--aggregation=gm", "--sigma=0.25", "--N=100",
                 "--alpha=0.01", "--batch=50", f"--export_dir={out}"], export)
    export.main(["export"])
    with open(out / served.SETTINGS_FILE) as f:
        settings = json.load(f)
    assert settings["aggregation"] == "gm" and settings["N"] == 100
    # Relative to the export, so the pair can be moved together.
    assert settings["models"] == [os.path.relpath(os.path.join(ensemble_dir, f"member_{i}"), out)
                                  for i in range(3)]
    loaded = tf.saved_model.load(str(out))
    result = loaded.signatures["predict_keyed"](images=tf.zeros((2, *SHAPE)),
                                                image_ids=tf.constant([0, 1], tf.int64))
    assert result["counts"].numpy().sum(axis=1).tolist() == [100, 100]

    parse_flags([f"--models={ensemble_dir}", "--aggregation=gm,mean", f"--export_dir={out}"], export)
    with pytest.raises(app.UsageError, match="one aggregation"):
        export.main(["export"])
    parse_flags([f"--models={ensemble_dir}", "--N=5", f"--export_dir={out}"], export)
    with pytest.raises(ValueError, match="--N=5 cannot certify"):
        export.main(["export"])
