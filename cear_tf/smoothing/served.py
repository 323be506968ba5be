"""The smoothed ensemble as one servable module: Cohen's PREDICT with the noise drawn in the
graph (written by `python -m cear_tf.cli.export`; see its docstring for the signatures).

Guarantee (Cohen et al. 2019, Theorem 2): a returned class differs from the smoothed
ensemble's class G(x) with probability at most alpha over the call's noise.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging

from cear_tf.ensemble import members as members_lib
from cear_tf.smoothing import decisions, input_contract
from cear_tf.smoothing.core import Smooth
from cear_tf.smoothing.noise import NoiseDomain, Phase, stream_key

SETTINGS_FILE = "smoothed.json"


def binomial_test_p_value(n_a: tf.Tensor, n_b: tf.Tensor) -> tf.Tensor:
    """Two-sided exact binomial test of n_a successes in n_a + n_b trials against p = 1/2,
    for n_a >= n_b (float64). By symmetry it is min(1, 2 P(X >= n_a)), X ~ Bin(n, 1/2), and
    P(X >= k) = I_{1/2}(k, n - k + 1), the regularised incomplete beta function."""
    n_a = tf.cast(n_a, tf.float64)
    n_b = tf.cast(n_b, tf.float64)
    tail = tf.math.betainc(tf.maximum(n_a, 1.0), n_b + 1.0, tf.constant(0.5, tf.float64))
    return tf.where(n_a > n_b, tf.minimum(2.0 * tail, 1.0), tf.ones_like(n_a))


class ServedSmooth(tf.Module):
    """PREDICT of one aggregation of a `Smooth` engine as a servable module.

    The engine's members, aggregator and noise are traced into the graph; `n`, `alpha` and
    `batch_size` are fixed at export. Each image's N draws are counted in batches of
    `batch_size`, so memory does not grow with N. Unless the engine's check_inputs is off,
    both signatures refuse images that break the input contract (cear_tf.smoothing.input_contract)
    with an InvalidArgumentError naming the rule, the image's index and the value.
    """

    def __init__(self, smooth: Smooth, n: int, alpha: float, batch_size: int,
                 tracked=()):
        super().__init__()
        if len(smooth.aggregators) != 1:
            raise ValueError(f"a smoothed SavedModel serves one aggregation, got "
                             f"{smooth.names}")
        if smooth.consensus_k:
            raise ValueError("K-consensus is not exported")
        decisions.check_sample_size(n, alpha)
        self._smooth = smooth
        self._n = int(n)
        self._alpha = float(alpha)
        self._batch = int(batch_size)
        self._tracked = list(tracked)  # loaded members whose variables the graph may read
        self.num_classes = smooth.num_classes

    def signatures(self, image_shape):
        self._image_shape = tuple(int(d) for d in image_shape)
        # Any shape is accepted at the signature, so a wrong one reaches the contract's check
        # (and its message) instead of a bare shape error.
        images = tf.TensorSpec(None, tf.float32, name="images")
        ids = tf.TensorSpec([None], tf.int64, name="image_ids")
        serving = tf.function(self._predict_fresh, input_signature=[images])
        keyed = tf.function(self._predict_keyed, input_signature=[images, ids])
        return {"serving_default": serving.get_concrete_function(),
                "predict_keyed": keyed.get_concrete_function()}

    def _checked(self, images):
        if not self._smooth.check_inputs:
            return tf.ensure_shape(images, [None, *self._image_shape])
        return input_contract.graph_check(images, self._image_shape)

    def _predict_fresh(self, images):
        images = self._checked(images)
        # Random stream keys per call: a stateful op, so every call draws new noise.
        keys = tf.random.uniform([tf.shape(images)[0], 2], minval=tf.int64.min,
                                 maxval=tf.int64.max, dtype=tf.int64)
        return self._predict(images, keys)

    def _predict_keyed(self, images, image_ids):
        images = self._checked(images)
        tf.debugging.assert_equal(tf.shape(image_ids)[0], tf.shape(images)[0],
                                  message="one image id per image")
        tf.debugging.assert_non_negative(image_ids, message="image ids must be >= 0")
        keys = tf.map_fn(lambda i: stream_key(self._smooth.seed, NoiseDomain.CERTIFY,
                                                        i, Phase.PREDICT),
                         image_ids, fn_output_signature=tf.TensorSpec([2], tf.int64))
        return self._predict(images, keys)

    def _predict(self, images, keys):
        counts = tf.map_fn(lambda args: self._counts(*args), (images, keys),
                           fn_output_signature=tf.TensorSpec([self.num_classes], tf.int64))
        # top_k puts the lower class first among ties, as the eager PREDICT's stable sort.
        top = tf.math.top_k(counts, k=2)
        n_a, n_b = top.values[:, 0], top.values[:, 1]
        p_value = binomial_test_p_value(n_a, n_b)
        prediction = tf.where(p_value <= self._alpha, top.indices[:, 0],
                              tf.constant(decisions.ABSTAIN, tf.int32))
        return {"prediction": prediction, "counts": counts, "p_value": p_value}

    def _counts(self, x, key):
        def body(first, total):
            num = tf.minimum(tf.constant(self._batch, tf.int64), self._n - first)
            counts, finite = self._smooth.engine.draw_counts(x, key, first, tf.cast(num, tf.int32))
            tf.debugging.assert_equal(finite, tf.ones_like(finite),
                                      message="a member returned NaN or Inf logits")
            return first + num, total + counts[0]

        _, total = tf.while_loop(lambda first, _: first < self._n, body,
                                 (tf.constant(0, tf.int64),
                                  tf.zeros([self.num_classes], tf.int64)))
        return total


def export_smoothed(smooth: Smooth, image_shape, directory: str, n: int, alpha: float,
                    batch_size: int, settings: dict, tracked=()) -> str:
    """Writes the smoothed ensemble's SavedModel to `directory` (through a temporary
    sibling renamed into place, so a directory that exists is complete), with its settings
    in smoothed.json beside saved_model.pb."""
    module = ServedSmooth(smooth, n, alpha, batch_size, tracked)
    signatures = module.signatures(tuple(image_shape))
    tmp = directory.rstrip("/") + ".partial"
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # TF logs every file it writes at INFO
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
    finally:
        logging.set_verbosity(verbosity)
    return members_lib.place_export(tmp, directory, SETTINGS_FILE, settings)
