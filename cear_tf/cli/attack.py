"""Attacks on the deployed (noisy-logit) ensemble: robust accuracy and transferability (Table 3).

  python -m cear_tf.cli.attack --dataset=mnist --data_dir=../shared/datasets --models=runs/cear \
      --aggregation=rw --logit_noise=0.3 --norm=inf --eps=0.2 --attacks=apgd-ce,apgd-dlr,fab \
      --source=members --eot=1 --num_images=500 --outfile=runs/attack_linf.tsv

The evaluated model is the ensemble as deployed and as certified (deployed.DeployedEnsemble):
member i sees clip(x + eta_i) (with --clip), eta_i ~ N(0, eps_l^2 I) drawn per member and per
query, and the members' probabilities are aggregated.
Adversarial examples are crafted on
  --source=member:i  one member as deployed (its own input noise): transferability,
  --source=members   each member in turn (rows per member and their mean, as in Table 3),
  --source=ensemble  the whole randomised ensemble (log of the aggregated probabilities;
                     every APGD attack runs twice, on that and on the aggregator's log-space
                     form, rows `<attack>/log-space`, which keeps gradients of saturated
                     members; for gm also on the members' mean, rows `<attack>/mean-surrogate`),
with --eot=k averaging each gradient over k noise draws (k = 1: the attack the paper ran;
larger k: the adaptive attack that sees through the noise).

Success rate = among images the ensemble classifies correctly, the fraction whose
prediction the attack changes. `all` rows count an image as robust only if every attack
failed on it (the AutoAttack convention).
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags, logging

from cear_tf.cli import common_flags, ensemble_flags, launch
from cear_tf.common.lazy import lazy_module
from cear_tf.config import choices

# Loaded when used, so --help answers without TensorFlow.
white_box = lazy_module("cear_tf.attacks.white_box")
datasets = lazy_module("cear_tf.data.datasets")
deployed = lazy_module("cear_tf.ensemble.deployed")
evaluation = lazy_module("cear_tf.attacks.evaluation")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    common_flags.define_data(validation=False)
    common_flags.define_seed("Seed of the member noise of the queries and of the attacks.")
    common_flags.define_output_dir()
    common_flags.define_outfile("Results table (appended).")
    common_flags.define_resume("Skip the run when its results table exists; --noresume appends a "
                               "new run.")
    ensemble_flags.define_ensemble()
    flags.DEFINE_enum("norm", "inf", list(choices.NORMS), "Threat model: L-infinity or L2.")
    flags.DEFINE_float("eps", 0.2, "Perturbation budget.")
    flags.DEFINE_list("attacks", ["apgd-ce", "apgd-dlr", "fab"], f"Any of {', '.join(choices.ATTACKS)}.")
    flags.DEFINE_string("source", "members", "member:i, members or ensemble.")
    flags.DEFINE_integer("eot", 1, "Noise draws averaged per gradient (Expectation over Transformation).")
    flags.DEFINE_integer("num_images", 500, "Test images attacked (evenly spaced over the test set).")
    flags.DEFINE_integer("num_iterations", 100, "Iterations per attack.")
    flags.DEFINE_integer("restarts", 1, "Restarts per attack.")
    flags.DEFINE_integer("batch_size", 100, "Images per attack step.")

    flags.register_validator("eps", lambda v: v > 0, message="--eps must be > 0")
    flags.register_validator("attacks", lambda v: bool(v) and all(a in choices.ATTACKS for a in v),
                             message=f"--attacks must name some of {', '.join(choices.ATTACKS)}")
    flags.register_validator("eot", lambda v: v >= 1, message="--eot must be >= 1")
    flags.register_validator("num_images", lambda v: v >= 1,
                             message="--num_images must be >= 1")
    flags.register_validator("num_iterations", lambda v: v >= 1,
                             message="--num_iterations must be >= 1")
    flags.register_validator("restarts", lambda v: v >= 1, message="--restarts must be >= 1")
    flags.register_validator("batch_size", lambda v: v >= 1,
                             message="--batch_size must be >= 1")


def main(argv):
    launch.require(argv, "models", "outfile")
    if len(FLAGS.aggregation) != 1:
        raise app.UsageError("--aggregation: give exactly one aggregation for the attacked ensemble")
    path = common_flags.expand_path(FLAGS.outfile)
    if FLAGS.resume and os.path.exists(path):
        logging.info("%s exists: skipped (--noresume appends a new run)", path)
        return
    loaded = ensemble_flags.load_ensemble()
    (aggregator,) = loaded.aggregators
    sources = evaluation.parse_source(FLAGS.source, len(loaded.members))
    images, labels = datasets.load_split(FLAGS.dataset, "test", FLAGS.data_dir)
    white_box.check_attack_arguments(FLAGS.norm, FLAGS.eps, images)
    keep = evaluation.evenly_spaced(len(labels), FLAGS.num_images)
    model = evaluation.AttackTarget(
        deployed.DeployedEnsemble(loaded.members, FLAGS.logit_noise, FLAGS.clip, loaded.fused),
        aggregator, seed=FLAGS.seed)
    rows = evaluation.evaluate(
        model, images[keep], labels[keep].astype(np.int32), sources, FLAGS.attacks, FLAGS.norm,
        FLAGS.eps, FLAGS.eot, FLAGS.num_iterations, FLAGS.restarts, FLAGS.batch_size, FLAGS.seed)
    evaluation.write_rows(path, rows)
    print("| source | attack | clean acc | robust acc | success rate |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['attack']} | {100 * r['clean_accuracy']:.2f}% | "
              f"{100 * r['robust_accuracy']:.2f}% | {100 * r['success_rate']:.2f}% |")


if __name__ == "__main__":
    launch.run(main, define_flags)
