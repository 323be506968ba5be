"""The input contract at the two boundaries other programs call: `Smooth` and the exported
smoothed SavedModel. An image that is not float32 [H, W, C] of the members' shape with every
pixel finite and in [0, 1] is refused with a message that names the rule, the image and the
value; anything else is certified exactly as without the check."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cear_tf.ensemble import loading
from cear_tf.smoothing import aggregate, input_contract, served
from cear_tf.smoothing.core import Smooth
from cear_tf.smoothing.input_contract import InputContractError
from tests.helpers import HALVES_CLASSES as K
from tests.helpers import HALVES_SHAPE as SHAPE
from tests.helpers import halves_member

RULE = "input contract (images [B, H, W, C] of the members' input shape, float32"


@pytest.fixture(scope="module")
def members_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract") / "ens"
    for i, gain in enumerate((1.0, 1.2)):
        halves_member(root / f"member_{i}", gain)
    return str(root)


@pytest.fixture(scope="module")
def loaded(members_dir):
    return loading.load_ensemble(loading.resolve_member_dirs([members_dir]))


def _smooth(loaded, check=True):
    return Smooth(loaded, K, 0.5, [aggregate.make_aggregator("mean", 2)], seed=3,
                  check_inputs=check)


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("served") / "smoothed")
    served.export_smoothed(_smooth(loaded), SHAPE, directory, 60, 0.01, 30,
                                   {"test": True}, tracked=[m.saved_model for m in loaded])
    return directory


def _valid(b=2):
    return np.random.default_rng(0).random((b, *SHAPE)).astype(np.float32)


# ---- the reported cases ------------------------------------------------------------------

@pytest.mark.parametrize("make,where", [
    (lambda x: np.full_like(x, np.nan), r"image 0 has pixel nan at \(0, 0, 0\) \(not finite\)"),
    (lambda x: np.full_like(x, 200.0), r"image 0 has pixel 200 .*a 0-255 image\? divide by 255"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 40, np.inf, x).astype(np.float32),
     r"image 1 has pixel inf at \(0, 4, 0\)"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x).astype(np.float32),
     r"image 0 has pixel nan at \(0, 3, 0\)"),
    (lambda x: -x - 0.5, r"image 0 has pixel -[0-9.]+ .*outside \[0, 1\]"),
    (lambda x: np.zeros((2, 32, 32, 3), np.float32), r"shape \(2, 32, 32, 3\), the members take \[B, 6, 6, 1\]"),
    (lambda x: (255 * x).astype(np.uint8), r"uint8, not float32 .*dividing by 255"),
])
def test_smooth_refuses_what_is_not_an_image(loaded, make, where):
    smooth = _smooth(loaded)
    bad = make(_valid())
    with pytest.raises(InputContractError, match=where) as err:
        smooth.certify_batch(bad, 10, 50, 0.01, 50)
    assert str(err.value).startswith(RULE)
    with pytest.raises(InputContractError, match=RULE.replace("(", r"\(").replace("[", r"\[")):
        smooth.predict_batch(bad, 50, 0.01, 50)
    with np.errstate(invalid="ignore"):
        broken = [i for i, img in enumerate(bad.astype(np.float64))
                  if not (np.isfinite(img).all() and 0 <= img.min() and img.max() <= 1)]
    with pytest.raises(InputContractError):
        smooth.certify(bad[broken[0] if broken else 0], 10, 50, 0.01, 50, idx=0)


def test_single_image_methods_name_the_image_index(loaded):
    x = _valid(1)[0]
    x[2, 2, 0] = np.nan
    smooth = _smooth(loaded)
    for call in (lambda: smooth.certify(x, 10, 50, 0.01, 50, idx=2160),
                 lambda: smooth.predict(x, 50, 0.01, 50, idx=2160),
                 lambda: smooth.sample_counts(x, 50, 50, 2160),
                 lambda: smooth.certify_radius(x, 0.1, 10, [50], 0.01, 50, idx=2160),
                 lambda: smooth.noisy_member_probabilities(x, 5, 5, 2160)):
        with pytest.raises(InputContractError, match=r"image 2160 has pixel nan at \(2, 2, 0\)"):
            call()
    with pytest.raises(InputContractError, match=r"image 7 has pixel nan"):
        smooth.certify_batch(x[None], 10, 50, 0.01, 50, image_ids=[7])


def test_batch_methods_check_arguments_first_and_each_image_once(loaded, monkeypatch):
    smooth = _smooth(loaded)
    bad = np.full_like(_valid(), np.nan)
    # Bad arguments are named before the images are looked at, as by certify / predict.
    with pytest.raises(ValueError, match="n0"):
        smooth.certify_batch(bad, 0, 50, 0.01, 50)
    with pytest.raises(ValueError, match="alpha"):
        smooth.predict_batch(bad, 50, 1.5, 50)
    calls = []
    check_images = input_contract.check_images
    monkeypatch.setattr(input_contract, "check_images",
                        lambda *a, **k: calls.append("batch") or check_images(*a, **k))
    monkeypatch.setattr(input_contract, "check_image",
                        lambda *a, **k: calls.append("image"))
    smooth.certify_batch(_valid(3), 10, 50, 0.01, 50)
    smooth.predict_batch(_valid(3), 50, 0.01, 50)
    assert calls == ["batch", "batch"]


def test_the_opt_out_lets_other_ranges_through(loaded):
    # Members made for 0-255 pixels: the user turns the check off and owns the range.
    images = 255 * _valid()
    out = _smooth(loaded, check=False).certify_batch(images, 10, 50, 0.01, 50, image_ids=[0, 1])
    assert len(out["mean"].prediction) == 2


_SERVE_BAD = r"""
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
results = {}
cases = {
    "all nan": np.full((2, 6, 6, 1), np.nan, np.float32),
    "one nan pixel": np.where(np.arange(72).reshape(2, 6, 6, 1) == 40, np.nan, 0.5).astype(np.float32),
    "0-255": np.full((1, 6, 6, 1), 200.0, np.float32),
    "inf pixel": np.where(np.arange(72).reshape(2, 6, 6, 1) == 3, np.inf, 0.5).astype(np.float32),
    "32x32x3": np.zeros((1, 32, 32, 3), np.float32),
}
for name, x in cases.items():
    for signature in ("serving_default", "predict_keyed"):
        args = dict(images=tf.constant(x))
        if signature == "predict_keyed":
            args["image_ids"] = tf.range(len(x), dtype=tf.int64)
        try:
            model.signatures[signature](**args)
            results[f"{name} / {signature}"] = "answered"
        except tf.errors.InvalidArgumentError as e:
            results[f"{name} / {signature}"] = e.message
assert not any(m.startswith("cear_tf") for m in sys.modules), "cear_tf was imported"
print(json.dumps(results))
"""


def test_the_exported_model_refuses_them_without_cear_tf(exported, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _SERVE_BAD, exported], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == 10
    for case, message in results.items():
        assert "input contract" in message, (case, message)
    assert "broken: image] [1] [has pixel] [nan]" in results["one nan pixel / serving_default"]
    assert "broken: image] [0] [has pixel] [200]" in results["0-255 / predict_keyed"]
    assert "broken: image] [0] [has pixel] [inf]" in results["inf pixel / predict_keyed"]
    assert "[1 32 32 3]" in results["32x32x3 / serving_default"]


def test_the_exported_settings_record_the_contract(members_dir, tmp_path):
    from cear_tf.cli import export
    from tests.helpers import parse_flags
    for check in (True, False):
        out = tmp_path / f"export_{check}"
        parse_flags([f"--models={members_dir}", "--aggregation=mean", "--sigma=0.5", "--N=50",
                     "--alpha=0.01", "--batch=50", f"--export_dir={out}",
                     "--check_inputs" if check else "--nocheck_inputs"], export)
        export.main(["export"])
        recorded = json.load(open(out / served.SETTINGS_FILE))
        assert recorded["check_inputs"] is check
        assert (recorded["input_contract"] == input_contract.RULE) is check
        model = tf.saved_model.load(str(out))
        x = tf.fill((1, *SHAPE), 200.0)
        if check:
            with pytest.raises(tf.errors.InvalidArgumentError, match="input contract"):
                model.signatures["serving_default"](images=x)
        else:
            assert model.signatures["serving_default"](images=x)["counts"].shape == (1, K)


# ---- property-based: random shapes, dtypes, non-finite positions and ranges --------------

@st.composite
def batches(draw):
    """Half the batches keep the contract (edge pixels 0 and 1 included), half break it in
    shape, dtype, range or finiteness, one way or several."""
    b = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        x = rng.random((b, *SHAPE)).astype(np.float32)
        for _ in range(draw(st.integers(0, 2))):
            x.reshape(-1)[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([0.0, 1.0]))
        return x
    shape = draw(st.sampled_from([SHAPE, SHAPE, (6, 6, 3), (5, 6, 1), (6, 6)]))
    dtype = draw(st.sampled_from([np.float32, np.float32, np.float32, np.float32, np.float64,
                                  np.uint8, np.int32,
                                  np.float16]))
    x = rng.random((b, *shape)) * draw(st.sampled_from([1.0, 255.0, -1.0, 1.0001]))
    for _ in range(draw(st.integers(0, 2))):
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1.5, -0.01]))
        x.reshape(-1)[draw(st.integers(0, x.size - 1))] = value
    if dtype in (np.uint8, np.int32):
        return np.nan_to_num(x, posinf=300, neginf=-5).clip(0, 255).astype(dtype)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def _is_valid(x):
    return (x.dtype == np.float32 and x.shape[1:] == SHAPE and np.isfinite(x).all()
            and x.min() >= 0 and x.max() <= 1)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(x=batches())
def test_smooth_either_refuses_by_the_contract_or_certifies_as_without_it(loaded, x):
    ids = list(range(100, 100 + len(x)))
    checked, unchecked = _smooth(loaded), _smooth(loaded, check=False)
    if not _is_valid(x):
        with pytest.raises(InputContractError) as err:
            checked.certify_batch(x, 10, 40, 0.01, 40, image_ids=ids)
        assert str(err.value).startswith(RULE)
        return
    got = checked.certify_batch(x, 10, 40, 0.01, 40, image_ids=ids)["mean"]
    want = unchecked.certify_batch(x, 10, 40, 0.01, 40, image_ids=ids)["mean"]
    for field in ("prediction", "radius", "count", "num", "p_lower"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(x=batches())
def test_the_exported_model_either_refuses_by_the_contract_or_answers_as_the_engine(
        loaded, exported, x):
    model = _served(exported)
    ids = tf.range(len(x), dtype=tf.int64) + 500
    if x.dtype != np.float32:
        # The signature takes float32: TensorFlow refuses other dtypes before the graph runs.
        with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
            model.signatures["predict_keyed"](images=tf.constant(x), image_ids=ids)
        return
    if not _is_valid(x):
        with pytest.raises(tf.errors.InvalidArgumentError, match="input contract"):
            model.signatures["predict_keyed"](images=tf.constant(x), image_ids=ids)
        return
    answer = model.signatures["predict_keyed"](images=tf.constant(x), image_ids=ids)
    want = [_smooth(loaded).predict(img, 60, 0.01, 30, idx=int(i))["mean"]
            for img, i in zip(x, ids.numpy())]
    assert answer["prediction"].numpy().tolist() == want


_SERVED = {}


def _served(directory):
    if directory not in _SERVED:
        _SERVED[directory] = tf.saved_model.load(directory)
    return _SERVED[directory]
