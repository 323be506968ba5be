"""The deployed ensemble under attack, and the evaluation of Table 3: clean and robust
accuracy, success rates per source and attack, and the table written as TSV.

AttackTarget wraps deployed.DeployedEnsemble (the members, member noise and clipping that
certification uses) with one aggregator; every query draws fresh member noise from the ATTACK
noise domain. `evaluate` crafts adversarial examples on each source (a member as deployed,
the members in turn, or the whole randomised ensemble, with EOT) and scores them on the
deployed ensemble. The command line is cear_tf.cli.attack.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from cear_tf.attacks import white_box
from cear_tf.common.progress import Progress
from cear_tf.ensemble import deployed
from cear_tf.smoothing import aggregate, noise

COLUMNS = ("source", "attack", "norm", "eps", "eot", "images", "clean_accuracy",
           "robust_accuracy", "success_rate", "seconds")

class AttackTarget:
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
        # Fused where the ensemble has a fused network, also with logit noise: an attack
        # step through the grouped network ran 1.10x as fast as through the separate
        # members (cear_tf.cli.bench --attack_logit_noise, README).
        logits = self.ensemble.all_member_logits(x, self._next_key(), 0, grouped=True)
        return tf.nn.log_softmax(logits, axis=-1)

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
        adv, norms = white_box.fab(target, x, y, norm, n_iter=n_iter, n_restarts=restarts,
                                 eps=eps, eot=eot, seed=seed)
        # Minimum-norm: at budget eps, the attack succeeded where it found a norm <= eps.
        return tf.where(white_box.expand_like(white_box.robust_mask(norms, eps), adv), adv, x).numpy()
    loss = {"apgd-ce": "ce", "apgd-dlr": "dlr"}[name]
    return white_box.apgd(target, x, y, eps, norm, loss, n_iter=n_iter, n_restarts=restarts,
                        eot=eot, seed=seed).numpy()

def evaluate(model: AttackTarget, images, labels, sources, attack_names, norm, eps, eot,
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
                bound = white_box.lp_norm(adv - images[i:i + batch], norm).numpy()
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
