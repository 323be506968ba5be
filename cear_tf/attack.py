"""Attacks on the deployed (noisy-logit) ensemble: robust accuracy and transferability (Table 3).

  python -m cear_tf.attack --dataset=mnist --data_dir=../shared/datasets --models=runs/cear \
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
import time

import numpy as np
from absl import app, flags, logging

from cear_tf import choices, cli, common_flags, smoothing_flags
from cear_tf.lazy import lazy_module
from cear_tf.progress import Progress

# Loaded when used, so --help answers without TensorFlow.
tf = lazy_module("tensorflow")
aggregate = lazy_module("cear_tf.aggregate")
attacks = lazy_module("cear_tf.attacks")
data = lazy_module("cear_tf.data")
deployed = lazy_module("cear_tf.deployed")
noise = lazy_module("cear_tf.noise")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (cli.run), never on import."""
    common_flags.define_data(validation=False)
    common_flags.define_seed("Seed of the member noise of the queries and of the attacks.")
    common_flags.define_output_dir()
    common_flags.define_outfile("Results table (appended).")
    common_flags.define_resume("Skip the run when its results table exists; --noresume appends a "
                               "new run.")
    smoothing_flags.define_ensemble(fuse=False)
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

COLUMNS = ("source", "attack", "norm", "eps", "eot", "images", "clean_accuracy",
           "robust_accuracy", "success_rate", "seconds")


class AttackedEnsemble:
    """The deployed ensemble (deployed.DeployedEnsemble: the same member noise, clipping and
    members as certification) with one aggregator, as an attacker queries it.

    Every query (a forward pass of a batch) draws fresh member noise: its key is the next of
    a counter in the ATTACK noise domain, so queries never repeat noise and runs reproduce.
    `member_scores(i)` and `ensemble_scores` are differentiable targets for the attacks;
    `predict` is one randomised query of the deployed classifier.
    """

    def __init__(self, ensemble: "deployed.DeployedEnsemble", aggregator: "aggregate.Aggregator",
                 seed: int = 0):
        self.ensemble = ensemble
        self.aggregator = aggregator
        self.seed = int(seed)
        self._mean = aggregate.make_aggregator("mean", ensemble.num_members)
        self._queries = tf.Variable(0, dtype=tf.int64, trainable=False)

    @property
    def members(self):
        return self.ensemble.members

    def _next_key(self):
        return noise.stream_key(self.seed, noise.NoiseDomain.ATTACK, self._queries.assign_add(1),
                                noise.Phase.PREDICT)

    def member_scores(self, i):
        return lambda x: self.ensemble.member_logits(x, self._next_key(), 0, i)

    def _member_log_probs(self, x):
        key = self._next_key()
        return tf.stack([tf.nn.log_softmax(self.ensemble.member_logits(x, key, 0, i), axis=-1)
                         for i in range(self.ensemble.num_members)])

    def ensemble_scores(self, x):
        """log(max(A(p), 1e-12)) of the aggregator A on the members' float32 probabilities.
        The geometric median is run in float64 here: its gradient is backpropagated through
        every Weiszfeld iteration, which overflows float32 on CIFAR-10 (NaN)."""
        probs = tf.exp(self._member_log_probs(x))
        if self.aggregator.name == "gm":
            probs = tf.cast(probs, tf.float64)
        return tf.cast(tf.math.log(tf.maximum(self.aggregator(probs), 1e-12)), tf.float32)

    def ensemble_log_space_scores(self, x):
        """The same scores in the aggregator's log-space form (aggregate.log_mixture): the
        gradient survives members whose float32 softmax is saturated (distilled students),
        where the form above has none. Neither form dominated on our data, so the ensemble
        source attacks both (see `evaluate`)."""
        return self.aggregator.log_scores(self._member_log_probs(x))

    def ensemble_mean_scores(self, x):
        """Log of the members' mean probability, a smooth stand-in for a non-smooth
        aggregator (BPDA, Athalye et al. 2018): the geometric median's gradient through the
        Weiszfeld iterations is ill-conditioned, and attacking the mean transfers to it."""
        return self._mean.log_scores(self._member_log_probs(x))

    def predict(self, x):
        """One query of the deployed classifier: argmax of the aggregator itself."""
        probs = tf.exp(self._member_log_probs(x))
        return tf.argmax(self.aggregator(probs), axis=1, output_type=tf.int32).numpy()


def parse_source(text: str, num_members: int) -> list:
    """'ensemble' -> ['ensemble']; 'members' -> [0..M-1]; 'member:i' -> [i]."""
    if text == "ensemble":
        return ["ensemble"]
    if text == "members":
        return list(range(num_members))
    if text.startswith("member:") and text[7:].isdigit() and int(text[7:]) < num_members:
        return [int(text[7:])]
    raise ValueError(f"--source must be ensemble, members or member:i with i < {num_members}, "
                     f"got {text!r}")


def run_attack(name, target, x, y, norm, eps, eot, n_iter, restarts, seed):
    if name == "fab":
        adv, norms = attacks.fab(target, x, y, norm, n_iter=n_iter, n_restarts=restarts,
                                 eps=eps, eot=eot, seed=seed)
        # Minimum-norm: at budget eps, the attack succeeded where it found a norm <= eps.
        return tf.where(attacks.expand_like(attacks.robust_mask(norms, eps), adv), adv, x).numpy()
    loss = {"apgd-ce": "ce", "apgd-dlr": "dlr"}[name]
    return attacks.apgd(target, x, y, eps, norm, loss, n_iter=n_iter, n_restarts=restarts,
                        eot=eot, seed=seed).numpy()


def evaluate(model: AttackedEnsemble, images, labels, sources, attack_names, norm, eps, eot,
             n_iter, restarts, batch, seed=0):
    """Result rows (dicts), one per (source, attack), plus `all` and, for several sources,
    the mean over sources."""
    clean_pred = np.concatenate([model.predict(images[i:i + batch])
                                 for i in range(0, len(labels), batch)])
    correct = clean_pred == labels
    rows = []
    for source in sources:
        if source == "ensemble":
            plan = [(name, name, model.ensemble_scores) for name in attack_names]
            plan += [(f"{name}/log-space", name, model.ensemble_log_space_scores)
                     for name in attack_names if name != "fab"]
            if model.aggregator.name == "gm":
                plan += [(f"{name}/mean-surrogate", name, model.ensemble_mean_scores)
                         for name in attack_names if name != "fab"]
        else:
            plan = [(name, name, model.member_scores(source)) for name in attack_names]
        robust_all = correct.copy()
        batches = -(-len(labels) // batch)
        bar = Progress(len(plan) * batches, f"attack, source {source}", unit="batch")
        for step, (label, name, target) in enumerate(plan):
            start = time.time()
            adv_pred = np.empty_like(labels)
            for i in range(0, len(labels), batch):
                adv = run_attack(name, target, images[i:i + batch], labels[i:i + batch], norm,
                                 eps, eot, n_iter, restarts, seed)
                bound = attacks.lp_norm(adv - images[i:i + batch], norm).numpy()
                if bound.max() > eps * (1 + 1e-5) or adv.min() < 0 or adv.max() > 1:
                    raise RuntimeError(f"{name} left the budget or the [0, 1] box")
                adv_pred[i:i + batch] = model.predict(adv)
                bar.update(step * batches + i // batch + 1)
            robust = correct & (adv_pred == labels)
            robust_all &= robust
            rows.append(_row(source, label, norm, eps, eot, correct, robust, clean_pred, adv_pred,
                             time.time() - start))
            logging.info("%s", rows[-1])
        if len(plan) > 1:
            rows.append(_row(source, "all", norm, eps, eot, correct, robust_all, None, None, 0.0))
    if len(sources) > 1:
        for name in [*attack_names, "all"] if len(attack_names) > 1 else attack_names:
            part = [r for r in rows if r["attack"] == name]
            rows.append(dict(part[0], source="mean", **{
                k: float(np.mean([r[k] for r in part]))
                for k in ("robust_accuracy", "success_rate", "seconds")}))
    return rows


def _row(source, attack, norm, eps, eot, correct, robust, clean_pred, adv_pred, seconds):
    n_correct = max(int(correct.sum()), 1)
    if clean_pred is None:
        success = 1.0 - robust.sum() / n_correct
    else:
        success = float(np.sum(correct & (adv_pred != clean_pred)) / n_correct)
    return dict(source=f"member:{source}" if isinstance(source, int) else source, attack=attack,
                norm=norm, eps=eps, eot=eot, images=len(correct),
                clean_accuracy=float(correct.mean()), robust_accuracy=float(robust.mean()),
                success_rate=float(success), seconds=round(seconds, 1))


def write_rows(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write("\t".join(f"{r[c]:.4f}" if isinstance(r[c], float) and c != "eps"
                              else str(r[c]) for c in COLUMNS) + "\n")
            f.flush()


def evenly_spaced(total: int, n: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))

def main(argv):
    cli.require(argv, "models", "outfile")
    if len(FLAGS.aggregation) != 1:
        raise app.UsageError("--aggregation: give exactly one aggregation for the attacked ensemble")
    path = common_flags.expand_path(FLAGS.outfile)
    if FLAGS.resume and os.path.exists(path):
        logging.info("%s exists: skipped (--noresume appends a new run)", path)
        return
    deployed_spec = smoothing_flags.load_ensemble()
    loaded, (aggregator,) = deployed_spec.members, deployed_spec.aggregators
    sources = parse_source(FLAGS.source, len(loaded))
    images, labels = data.load_split(FLAGS.dataset, "test", FLAGS.data_dir)
    attacks.check_attack_arguments(FLAGS.norm, FLAGS.eps, images)
    keep = evenly_spaced(len(labels), FLAGS.num_images)
    model = AttackedEnsemble(deployed.DeployedEnsemble(loaded, FLAGS.logit_noise, FLAGS.clip),
                             aggregator, seed=FLAGS.seed)
    rows = evaluate(model, images[keep], labels[keep].astype(np.int32), sources, FLAGS.attacks,
                    FLAGS.norm, FLAGS.eps, FLAGS.eot, FLAGS.num_iterations, FLAGS.restarts,
                    FLAGS.batch_size, FLAGS.seed)
    write_rows(path, rows)
    print("| source | attack | clean acc | robust acc | success rate |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['source']} | {r['attack']} | {100 * r['clean_accuracy']:.2f}% | "
              f"{100 * r['robust_accuracy']:.2f}% | {100 * r['success_rate']:.2f}% |")


if __name__ == "__main__":
    cli.run(main, define_flags)
