"""Exports a smoothed ensemble as one SavedModel: Cohen's PREDICT, noise drawn in the graph.

  python -m cear_tf.export --models=results/mnist_sigma100/cear --aggregation=gm \
      --sigma=1.0 --N=1000 --alpha=0.001 --export_dir=exported/mnist_cear_gm_sigma100

The SavedModel needs TensorFlow only (no cear_tf), so TF Serving and `tf.saved_model.load`
serve it. Its signatures take float32 images [B, H, W, C] with pixels in [0, 1]:

  serving_default(images)             fresh noise on every call;
  predict_keyed(images, image_ids)    the noise of cear_tf's PREDICT stream of each image id
                                      under the exported --seed: the same draws, and so the
                                      same answers, as `Smooth.predict(x, ..., idx=image_id)`.

Both return, per image, `prediction` (int32, the class, or -1 to abstain), `counts` (int64
[K], the N votes of the base ensemble) and `p_value` (float64, two-sided binomial test of the
top two counts). Guarantee (Cohen et al. 2019, Theorem 2): a returned class differs from the
smoothed ensemble's class G(x) with probability at most alpha over the call's noise.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import app, flags, logging

from cear_tf import smoothing_flags
from cear_tf import cli, common_flags, smoothing
from cear_tf import members as members_lib
from cear_tf.smoothing import NoiseDomain, Phase, Smooth

FLAGS = flags.FLAGS

def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (cli.run), never on import."""
    common_flags.define_sigma("Smoothing noise std sigma_v, in pixel units.")
    common_flags.define_seed("Seed of the predict_keyed noise streams.")
    common_flags.define_output_dir()
    smoothing_flags.define_ensemble()
    smoothing_flags.define_sampling(selection=False)
    flags.DEFINE_string("export_dir", None, "Directory to write the smoothed ensemble's "
                        "SavedModel to ('{output_dir}' is replaced by --output_dir).")

SETTINGS_FILE = "smoothed.json"


def binomial_test_p_value(n_a: tf.Tensor, n_b: tf.Tensor) -> tf.Tensor:
    """Two-sided exact binomial test of n_a successes in n_a + n_b trials against p = 1/2,
    for n_a >= n_b (float64). By symmetry it is min(1, 2 P(X >= n_a)), X ~ Bin(n, 1/2), and
    P(X >= k) = I_{1/2}(k, n - k + 1), the regularised incomplete beta function."""
    n_a = tf.cast(n_a, tf.float64)
    n_b = tf.cast(n_b, tf.float64)
    tail = tf.math.betainc(tf.maximum(n_a, 1.0), n_b + 1.0, tf.constant(0.5, tf.float64))
    return tf.where(n_a > n_b, tf.minimum(2.0 * tail, 1.0), tf.ones_like(n_a))


class SmoothedEnsemble(tf.Module):
    """PREDICT of one aggregation of a `Smooth` engine as a servable module.

    The engine's members, aggregator and noise are traced into the graph; `n`, `alpha` and
    `batch_size` are fixed at export. Each image's N draws are counted in batches of
    `batch_size`, so memory does not grow with N.
    """

    def __init__(self, smooth: Smooth, n: int, alpha: float, batch_size: int,
                 tracked=()):
        super().__init__()
        if len(smooth.aggregators) != 1:
            raise ValueError(f"a smoothed SavedModel serves one aggregation, got "
                             f"{smooth.names}")
        if smooth.consensus_k:
            raise ValueError("K-consensus is not exported")
        smoothing.check_sample_size(n, alpha)
        self._smooth = smooth
        self._n = int(n)
        self._alpha = float(alpha)
        self._batch = int(batch_size)
        self._tracked = list(tracked)  # loaded members whose variables the graph may read
        self.num_classes = smooth.num_classes

    def signatures(self, image_shape):
        images = tf.TensorSpec([None, *image_shape], tf.float32, name="images")
        ids = tf.TensorSpec([None], tf.int64, name="image_ids")
        serving = tf.function(self._predict_fresh, input_signature=[images])
        keyed = tf.function(self._predict_keyed, input_signature=[images, ids])
        return {"serving_default": serving.get_concrete_function(),
                "predict_keyed": keyed.get_concrete_function()}

    def _predict_fresh(self, images):
        # Random stream keys per call: a stateful op, so every call draws new noise.
        keys = tf.random.uniform([tf.shape(images)[0], 2], minval=tf.int64.min,
                                 maxval=tf.int64.max, dtype=tf.int64)
        return self._predict(images, keys)

    def _predict_keyed(self, images, image_ids):
        tf.debugging.assert_equal(tf.shape(image_ids)[0], tf.shape(images)[0],
                                  message="one image id per image")
        tf.debugging.assert_non_negative(image_ids, message="image ids must be >= 0")
        keys = tf.map_fn(lambda i: smoothing.stream_key(self._smooth.seed, NoiseDomain.CERTIFY,
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
                              tf.constant(smoothing.ABSTAIN, tf.int32))
        return {"prediction": prediction, "counts": counts, "p_value": p_value}

    def _counts(self, x, key):
        def body(first, total):
            num = tf.minimum(tf.constant(self._batch, tf.int64), self._n - first)
            counts, finite = self._smooth.draw_counts(x, key, first, tf.cast(num, tf.int32))
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
    module = SmoothedEnsemble(smooth, n, alpha, batch_size, tracked)
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("models", "export_dir"):
        if not FLAGS[name].value:
            raise app.UsageError(f"--{name} is required")
    if len(FLAGS.aggregation) != 1:
        raise app.UsageError(f"--aggregation: a smoothed SavedModel serves one aggregation, "
                             f"got {','.join(FLAGS.aggregation)}")
    smoothing.check_sample_size(FLAGS.N, FLAGS.alpha)
    export_dir = common_flags.expand_path(FLAGS.export_dir)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(f"--export_dir: {export_dir} exists and is not a directory")
    member_dirs = smoothing_flags.member_dirs()
    members = smoothing_flags.load_members(member_dirs)
    aggregators = smoothing_flags.aggregators(member_dirs)
    smooth = Smooth(members, members[0].num_classes, FLAGS.sigma, aggregators,
                    logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, seed=FLAGS.seed,
                    fused=smoothing_flags.fused_members(members))
    settings = dict(
        aggregation=aggregators[0].name,
        models=[os.path.relpath(os.path.abspath(d), os.path.abspath(export_dir))
                for d in member_dirs],
        fingerprint=smoothing_flags.fingerprint(member_dirs, aggregators),
        sigma=FLAGS.sigma, logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, N=FLAGS.N,
        alpha=FLAGS.alpha, batch=FLAGS.batch, seed=FLAGS.seed, noise=smoothing.NOISE_SCHEME,
        input_shape=list(members[0].input_shape), num_classes=members[0].num_classes,
        signatures={"serving_default": "images -> prediction, counts, p_value (fresh noise)",
                    "predict_keyed": "images, image_ids -> the same, noise of cear_tf's "
                                     "PREDICT stream of each image id under seed"})
    export_smoothed(smooth, members[0].input_shape, export_dir, FLAGS.N, FLAGS.alpha,
                    FLAGS.batch, settings, tracked=[m.saved_model for m in members])
    logging.info("smoothed ensemble (%s of %d members, sigma %g, N %d, alpha %g): %s",
                 aggregators[0].name, len(members), FLAGS.sigma, FLAGS.N, FLAGS.alpha,
                 export_dir)
    print(export_dir)


if __name__ == "__main__":
    cli.run(main, define_flags)
