"""Variance of the classification margin of soft ensembles of the first k members.

  python -m cear_tf.cli.variance --models=runs/sween --sigma=0.5 --skip=20 --max=3500 \
      --start=2160 --draws=1000 --outfile=runs/sween/margin_variance.json

Horvath et al. (2022, "Boosting randomized smoothing with variance reduced classifiers"):
if the members' outputs under the smoothing noise have variance s^2 and pairwise correlation
zeta, the average of k members has variance s^2 (1 + zeta (k - 1)) / k, which is what lets an
ensemble's smoothed classifier certify larger radii. This measures both sides on real members.

For each image x (label y) and noise draw j, member i's margin is
m_ij = p_i(x + eps_j)[y] - p_i(x + eps_j)[c'], c' the runner-up class of the members' mean
over all draws (fixed per image, so the margin is linear in the members' probabilities and
the soft ensemble's margin is the mean of theirs). Pooled over images:
  s^2  = sum_x sum_i Var_j(m_ij) / (M * images)                         (one member)
  zeta = sum_x sum_{i != l} Cov_j(m_ij, m_lj) / ((M - 1) sum_x sum_i Var_j(m_ij))
  measured ratio(k)  = sum_x Var_j(mean_{i<k} m_ij) / (sum_x sum_{i<k} Var_j(m_ij) / k)
  predicted ratio(k) = (1 + zeta (k - 1)) / k.
Probabilities, not logits, because the ensembles here average softmax outputs.
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from cear_tf.cli import common_flags, ensemble_flags, launch
from cear_tf.common.lazy import lazy_module
from cear_tf.smoothing.margins import margin_statistics, margins

# Loaded when used, so --help answers without TensorFlow.
aggregate = lazy_module("cear_tf.smoothing.aggregate")
datasets = lazy_module("cear_tf.data.datasets")
core = lazy_module("cear_tf.smoothing.core")
noise = lazy_module("cear_tf.smoothing.noise")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    ensemble_flags.define_smoothing_run("Keep an existing result file; --noresume recomputes it.")
    ensemble_flags.define_ensemble(aggregation=False)
    ensemble_flags.define_sampling(selection=False, estimation=False)
    ensemble_flags.define_images()
    flags.DEFINE_integer("draws", 1000, "Noise draws per image.")
    flags.DEFINE_string("outfile", None, "Where the statistics go (JSON); required.")

    flags.register_validator("draws", lambda v: v >= 2, message="--draws must be >= 2")


def is_done() -> bool:
    """The statistics file exists (main keeps it unless --noresume)."""
    return FLAGS.resume and os.path.exists(common_flags.expand_path(FLAGS.outfile))


def main(argv):
    launch.require(argv, "models", "outfile")
    out = common_flags.expand_path(FLAGS.outfile)
    if FLAGS.resume and os.path.exists(out):
        logging.info("%s exists: skipped (--noresume recomputes)", out)
        return
    loaded = ensemble_flags.load_ensemble()
    members, member_dirs = loaded.members, loaded.member_dirs
    if len(member_dirs) < 2:
        raise app.UsageError(f"--models: {len(member_dirs)} member found; the variance ratio "
                             f"needs an ensemble of at least 2")
    info = datasets.dataset_info(FLAGS.dataset)
    images, labels = datasets.load_split(FLAGS.dataset, "test", FLAGS.data_dir,
                                     FLAGS.validation_size, FLAGS.split_seed)
    indices = ensemble_flags.selected_images(len(labels))
    smooth = core.Smooth(members, info.num_classes, FLAGS.sigma,
                    aggregate.per_member_aggregators(len(members)),
                    logit_noise=FLAGS.logit_noise, clip=FLAGS.clip, seed=FLAGS.seed,
                    noise_domain=noise.NoiseDomain.MARGIN_VARIANCE,
                    fused=loaded.fused)
    per_image = []
    for n, idx in enumerate(indices, start=1):
        probs = smooth.noisy_member_probabilities(images[idx], FLAGS.draws, FLAGS.batch, idx=idx)
        per_image.append(margins(probs, int(labels[idx])))
        if n % 10 == 0 or n == len(indices):
            logging.info("margin variance: %d/%d images", n, len(indices))
    stats = margin_statistics(per_image)
    stats.update(models=[os.path.relpath(os.path.abspath(d)) for d in member_dirs],
                 dataset=FLAGS.dataset, sigma=FLAGS.sigma, draws=FLAGS.draws,
                 images=indices, seed=FLAGS.seed, logit_noise=FLAGS.logit_noise, clip=FLAGS.clip)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out + ".tmp", "w") as f:
        json.dump(stats, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"zeta = {stats['zeta']:.3f}; Var(mean of first k) / Var(one member):")
    for row in stats["by_k"]:
        print(f"  k={row['k']}: measured {row['measured_ratio']:.3f}, "
              f"predicted (1 + zeta (k - 1)) / k = {row['predicted_ratio']:.3f}")


if __name__ == "__main__":
    launch.run(main, define_flags, is_done)
