"""Aggregation weights for an ensemble, computed on the validation split.

  python -m cear_tf.cli.weights --aggregation=rw --models=runs/ensemble --sigma=0.25 --N=10000
  python -m cear_tf.cli.weights --aggregation=sween --models=runs/ensemble --sigma=0.25

RW (paper eq. 6): lambda_i = a_i / sum_j a_j, a_i = member i's certified accuracy at
--radius on the validation split (held out of the official training set, disjoint from
every member's training data), computed by the same certify engine as the test results.

SWEEN (Liu et al. 2021): lambda = softmax(w), w minimising the negative log-likelihood of
sum_i lambda_i p_i(x + eps) on noisy validation images.

The weights are saved as JSON (default: weights_<aggregation>.json beside the members) and
read by cear_tf.cli.certify.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags, logging

from cear_tf.cli import common_flags, ensemble_flags, launch
from cear_tf.common.lazy import lazy_module
from cear_tf.common.locking import OutputLock
from cear_tf.ensemble import files

# Loaded when used, so --help answers without TensorFlow.
aggregate = lazy_module("cear_tf.smoothing.aggregate")
datasets = lazy_module("cear_tf.data.datasets")
loading = lazy_module("cear_tf.ensemble.loading")
members_lib = lazy_module("cear_tf.ensemble.members")
core = lazy_module("cear_tf.smoothing.core")
decisions = lazy_module("cear_tf.smoothing.decisions")
noise = lazy_module("cear_tf.smoothing.noise")
fitting = lazy_module("cear_tf.ensemble.fitting")
input_contract = lazy_module("cear_tf.smoothing.input_contract")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    ensemble_flags.define_smoothing_run("Keep an existing weights file; --noresume recomputes it.")
    ensemble_flags.define_ensemble(aggregation=False)
    ensemble_flags.define_sampling()
    flags.DEFINE_enum("aggregation", "rw", ["rw", "sween"], "The aggregation whose weights "
                      "are fitted.")
    flags.DEFINE_enum("rw_fit", "certified", ["certified", "released"],
                      "RW: certified = each member's certified accuracy at --radius on the "
                      "validation split (paper eq. 6); released = its accuracy on one noisy "
                      "copy of the TEST split (clipped with --clip), as the released "
                      "WeightedEnsemble (docs/deviations.md A2): weights fitted on the test "
                      "set, a reproduction option only.")
    flags.DEFINE_float("radius", 0.0, "RW: certified accuracy is taken at this radius.")
    flags.DEFINE_integer("num_images", 500, "Validation images used (the first ones).")
    flags.DEFINE_integer("sween_draws", 16, "SWEEN: noise draws per validation image.")
    flags.DEFINE_string("outfile", None, "Output JSON (default: weights_<aggregation>.json beside "
                        "the members).")

    flags.register_validator("radius", lambda v: v >= 0, message="--radius must be >= 0")
    flags.register_validator("num_images", lambda v: v >= 1,
                             message="--num_images must be >= 1")
    flags.register_validator("sween_draws", lambda v: v >= 1, message="--sween_draws must be >= 1")


def _outfile(member_dirs) -> str:
    return (common_flags.expand_path(FLAGS.outfile)
            or files.default_weights_path(member_dirs, FLAGS.aggregation))


def is_done() -> bool:
    """The weights file exists (main keeps it unless --noresume)."""
    member_dirs = files.resolve_member_dirs(ensemble_flags.ensemble_spec().models)
    return FLAGS.resume and os.path.exists(_outfile(member_dirs))


def main(argv):
    launch.require(argv, "models")
    if FLAGS.validation_size < 1:
        raise app.UsageError("--validation_size must be >= 1: weights need a validation split")
    if FLAGS.aggregation == "rw":
        decisions.check_sample_size(FLAGS.N, FLAGS.alpha)
    member_dirs = loading.resolve_member_dirs(ensemble_flags.ensemble_spec().models)
    path = _outfile(member_dirs)
    if os.path.isdir(path):
        raise ValueError(f"--outfile: {path} is a directory; give a file path")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with OutputLock(path):  # also proves the folder writable, before any work
        if FLAGS.resume and os.path.exists(path):
            logging.info("%s exists: skipped (--noresume recomputes)", path)
            return
        _compute_and_save(member_dirs, path)


def _compute_and_save(member_dirs, path):
    loaded = ensemble_flags.load_ensemble()
    members = loaded.members
    info = datasets.dataset_info(FLAGS.dataset)
    released = FLAGS.aggregation == "rw" and FLAGS.rw_fit == "released"
    split = "test" if released else "validation"
    images, labels = datasets.load_split(FLAGS.dataset, split, FLAGS.data_dir,
                                     FLAGS.validation_size, FLAGS.split_seed)
    images, labels = images[:FLAGS.num_images], labels[:FLAGS.num_images]
    input_contract.check_images(images, members[0].input_shape,
                                where=f"the {FLAGS.dataset} {split} images read from "
                                      f"--data_dir={FLAGS.data_dir}")
    details = dict(dataset=FLAGS.dataset, sigma=FLAGS.sigma, images=int(len(labels)),
                   validation_size=FLAGS.validation_size, split_seed=FLAGS.split_seed,
                   logit_noise=FLAGS.logit_noise, seed=FLAGS.seed, precision=FLAGS.precision,
                   noise=noise.NOISE_SCHEME,
                   member_digests=[members_lib.content_digest(d) for d in member_dirs])
    if released:
        weights, accuracy = fitting.released_robust_weights(
            members, images, labels, FLAGS.sigma, FLAGS.clip, FLAGS.seed, FLAGS.batch)
        details.update(rw_fit="released", split="test", clip=FLAGS.clip,
                       noisy_accuracy=accuracy.tolist(),
                       note="the released WeightedEnsemble's weights (docs/deviations.md A2): "
                            "each member's accuracy on one noisy copy of the test images")
    elif FLAGS.aggregation == "rw":
        weights, accuracy = fitting.robust_weights(
            members, info.num_classes, images, labels, FLAGS.sigma, FLAGS.radius, FLAGS.N0,
            FLAGS.N, FLAGS.alpha, FLAGS.batch, FLAGS.logit_noise, FLAGS.clip, FLAGS.seed,
            loaded.fused)
        details.update(radius=FLAGS.radius, N0=FLAGS.N0, N=FLAGS.N, alpha=FLAGS.alpha,
                       certified_accuracy=accuracy.tolist())
    else:
        smooth = core.Smooth(members, info.num_classes, FLAGS.sigma,
                        aggregate.per_member_aggregators(len(members)),
                        logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, seed=FLAGS.seed,
                        noise_domain=noise.NoiseDomain.SWEEN_WEIGHTS,
                        fused=loaded.fused)
        probs = np.concatenate([smooth.noisy_member_probabilities(x, FLAGS.sween_draws,
                                                                  FLAGS.batch, idx=i)
                                for i, x in enumerate(images)], axis=1)
        weights, nll = fitting.fit_sween_weights(probs, np.repeat(labels, FLAGS.sween_draws))
        details.update(draws=FLAGS.sween_draws, nll=nll)
    loading.save_weights(path, FLAGS.aggregation, member_dirs, weights, details)
    logging.info("%s weights %s -> %s", FLAGS.aggregation, np.round(weights, 4).tolist(), path)


if __name__ == "__main__":
    launch.run(main, define_flags, is_done)
