"""--precision: the reduced-precision rewrite really runs, and leaves large-margin
certificates unchanged on a fixed seed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cear_tf.ensemble import precision
from cear_tf.smoothing import aggregate
from cear_tf.smoothing.core import Smooth

SHAPE = (8, 8, 1)
CLASSES = 3


def template_member(scale, seed):
    """Conv (identity 1x1) + Dense: logit_c = scale * sum of (x - 1/2) over class c's 16 pixels.

    An image equal to template c has margin ~ 16 * scale against noise of std
    scale * sigma * 4 per logit, so no smoothing draw at sigma = 0.25 is near a boundary.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.permutation(64)[:16 * CLASSES].reshape(CLASSES, 16)
    w = np.zeros((64, CLASSES), np.float32)
    for c in range(CLASSES):
        w[pixels[c], c] = scale
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(inputs)
    h = keras.layers.Flatten()(h)
    logits = keras.layers.Dense(CLASSES, kernel_initializer=keras.initializers.Constant(w),
                                bias_initializer=keras.initializers.Constant(-scale * 8.0))(h)
    model = keras.Model(inputs, logits)
    templates = np.zeros((CLASSES, 64), np.float32)
    for c in range(CLASSES):
        templates[c, pixels[c]] = 1.0
    return model, templates.reshape(CLASSES, *SHAPE)


def _aggregators(m):
    return [aggregate.make_aggregator(a, m, weights=[1.0 / m] * m if a == "rw" else None)
            for a in ("mean", "mv", "rw", "gm")]


@pytest.fixture
def bfloat16_rewrite():
    try:
        precision.set_inference_precision("mixed_bfloat16")
    except ValueError as e:  # a GPU is visible, or oneDNN is off
        pytest.skip(str(e))
    yield
    precision.set_inference_precision("float32")


def _certify_all(members, images):
    smooth = Smooth(members, CLASSES, 0.25, _aggregators(len(members)), seed=3)
    return [smooth.certify(x, 50, 2000, 0.001, 500, idx=i) for i, x in enumerate(images)]


def test_bfloat16_rewrite_changes_arithmetic_not_certificates(bfloat16_rewrite):
    model, templates = template_member(scale=37.3, seed=0)
    members = [model] * 3
    probe = np.random.default_rng(1).uniform(size=(16, *SHAPE)).astype(np.float32)

    low_logits = tf.function(lambda x: model(x))(probe).numpy()
    low = _certify_all(members, templates)
    precision.set_inference_precision("float32")
    exact_logits = tf.function(lambda x: model(x))(probe).numpy()
    exact = _certify_all(members, templates)

    # The rewrite ran (bfloat16 keeps 8 significant bits) ...
    relative = np.abs(low_logits - exact_logits).max() / np.abs(exact_logits).max()
    assert 1e-5 < relative < 2e-2
    # ... and every aggregator certifies the same class, count and radius.
    for c, (lo, ex) in enumerate(zip(low, exact)):
        for name in ex:
            assert ex[name].prediction == c
            assert lo[name] == ex[name]


def test_unknown_or_unavailable_precision_names_the_flag():
    with pytest.raises(ValueError, match="--precision: unknown precision 'float8'"):
        precision.check_precision("float8")
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(ValueError, match="--precision=mixed_float16 .* no GPU"):
            precision.check_precision("mixed_float16")
