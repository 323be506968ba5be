"""Exports a smoothed ensemble as one SavedModel: Cohen's PREDICT, noise drawn in the graph.

  python -m cear_tf.cli.export --models=results/mnist_sigma100/cear --aggregation=gm \
      --sigma=1.0 --N=1000 --alpha=0.001 --export_dir=exported/mnist_cear_gm_sigma100

The SavedModel needs TensorFlow only (no cear_tf), so TF Serving and `tf.saved_model.load`
serve it. Its signatures take float32 images [B, H, W, C] of the members' shape with every
pixel finite and in [0, 1] (cear_tf.smoothing.input_contract), and refuse any other batch with an
InvalidArgumentError that names the rule, the image and the value (--nocheck_inputs: no
check, for members made for another range; recorded in smoothed.json):

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

from absl import app, flags, logging

from cear_tf.cli import common_flags, ensemble_flags, launch
from cear_tf.common.lazy import lazy_module

# Loaded when main runs, so --help answers without TensorFlow.
core = lazy_module("cear_tf.smoothing.core")
decisions = lazy_module("cear_tf.smoothing.decisions")
noise = lazy_module("cear_tf.smoothing.noise")
served = lazy_module("cear_tf.smoothing.served")
input_contract = lazy_module("cear_tf.smoothing.input_contract")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    common_flags.define_sigma("Smoothing noise std sigma_v, in pixel units.")
    common_flags.define_seed("Seed of the predict_keyed noise streams.")
    common_flags.define_output_dir()
    ensemble_flags.define_ensemble()
    ensemble_flags.define_sampling(selection=False)
    flags.DEFINE_bool("check_inputs", True, "Refuse images that break the input contract "
                      "(float32, finite, in [0, 1], the members' shape) in both signatures; "
                      "--nocheck_inputs only for members made for another range.")
    flags.DEFINE_string("export_dir", None, "Directory to write the smoothed ensemble's "
                        "SavedModel to ('{output_dir}' is replaced by --output_dir).")

def main(argv):
    launch.require(argv, "models", "export_dir")
    if len(FLAGS.aggregation) != 1:
        raise app.UsageError(f"--aggregation: a smoothed SavedModel serves one aggregation, "
                             f"got {','.join(FLAGS.aggregation)}")
    decisions.check_sample_size(FLAGS.N, FLAGS.alpha)
    export_dir = common_flags.expand_path(FLAGS.export_dir)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(f"--export_dir: {export_dir} exists and is not a directory")
    loaded = ensemble_flags.load_ensemble()
    members, member_dirs, aggregators = loaded.members, loaded.member_dirs, loaded.aggregators
    smooth = core.Smooth(members, members[0].num_classes, FLAGS.sigma, aggregators,
                    logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, seed=FLAGS.seed,
                    fused=loaded.fused, check_inputs=FLAGS.check_inputs)
    settings = dict(
        aggregation=aggregators[0].name,
        models=[os.path.relpath(os.path.abspath(d), os.path.abspath(export_dir))
                for d in member_dirs],
        fingerprint=loaded.fingerprint(),
        sigma=FLAGS.sigma, logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, N=FLAGS.N,
        alpha=FLAGS.alpha, batch=FLAGS.batch, seed=FLAGS.seed, noise=noise.NOISE_SCHEME,
        input_shape=list(members[0].input_shape), num_classes=members[0].num_classes,
        check_inputs=FLAGS.check_inputs,
        input_contract=input_contract.RULE if FLAGS.check_inputs else None,
        signatures={"serving_default": "images -> prediction, counts, p_value (fresh noise)",
                    "predict_keyed": "images, image_ids -> the same, noise of cear_tf's "
                                     "PREDICT stream of each image id under seed"})
    served.export_smoothed(smooth, members[0].input_shape, export_dir, FLAGS.N, FLAGS.alpha,
                    FLAGS.batch, settings, tracked=[m.saved_model for m in members])
    logging.info("smoothed ensemble (%s of %d members, sigma %g, N %d, alpha %g): %s",
                 aggregators[0].name, len(members), FLAGS.sigma, FLAGS.N, FLAGS.alpha,
                 export_dir)
    print(export_dir)


if __name__ == "__main__":
    launch.run(main, define_flags)
