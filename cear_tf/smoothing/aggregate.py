"""Ensemble aggregators: [M, B, K] member probabilities -> [B, K] class scores.

Every aggregator is a plain TensorFlow function, batched and graph-compatible, so the
certify engine runs them inside its `tf.function` on one shared set of member passes.
The ensemble's class on a draw is `argmax` of the scores; `tf.argmax` returns the lowest
index among ties, which is the documented tie rule for all aggregators (for `mv`: the
lowest class index among the classes with the most votes).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

# The names live in cear_tf.config.choices (no TensorFlow), re-exported here.
from cear_tf.config.choices import AGGREGATIONS, PREFIXABLE, WEIGHTED, parse_aggregation  # noqa: F401

GM_DISTANCE_FLOOR = 1e-12


def aggregate_single(probs: tf.Tensor) -> tf.Tensor:
    """The first member alone (RandSmooth of Cohen et al. 2019)."""
    return probs[0]


def aggregate_mean(probs: tf.Tensor) -> tf.Tensor:
    """Uniform average of the members' probability vectors (soft ensemble)."""
    return tf.reduce_mean(probs, axis=0)


def aggregate_majority_vote(probs: tf.Tensor) -> tf.Tensor:
    """Vote counts of the members' hard predictions, as [B, K] scores."""
    k = tf.shape(probs)[-1]
    return tf.reduce_sum(tf.one_hot(tf.argmax(probs, axis=-1), k, dtype=probs.dtype), axis=0)


def aggregate_weighted(probs: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """sum_i w_i p_i with fixed weights [M] (RW: certified accuracies; SWEEN: learned)."""
    w = tf.cast(weights, probs.dtype)
    return tf.tensordot(w, probs, axes=[[0], [0]])


def floored_distance(diff: tf.Tensor) -> tf.Tensor:
    """max(|diff|_2, GM_DISTANCE_FLOOR) over the last axis, written as the square root of the
    floored square so no sqrt is differentiated at 0 (the median can sit exactly on a
    member's point, e.g. when saturated members share one one-hot vector)."""
    squared = tf.reduce_sum(tf.square(diff), axis=-1)
    return tf.sqrt(tf.maximum(squared, tf.cast(GM_DISTANCE_FLOOR, diff.dtype) ** 2))


def aggregate_geometric_median(
    probs: tf.Tensor, tolerance: float = 1e-6, max_iterations: int = 100
) -> tf.Tensor:
    """Geometric median of the M probability vectors on the simplex, per batch row.

    Weiszfeld iterations q <- sum_i p_i / d_i / sum_i 1 / d_i, d_i = max(|q - p_i|, 1e-12),
    started from the mean; stops when no row moves more than `tolerance` (L2) or after
    `max_iterations`. Every iterate is a convex combination of the p_i (positive weights
    summing to one), so it lies on the simplex without a projection step: the projection the
    method's description names is the identity there (up to float rounding), and computing
    it (a sort per row and step) made GM 2.7-3.1x slower with the same vote on every draw
    measured (benchmarks/gm_projection.py, docs/performance.md). A set of points holding more than
    half of the members at one vector has that vector as its median, so a minority of
    outlying members cannot move the result.
    """
    probs = tf.convert_to_tensor(probs)
    q0 = tf.reduce_mean(probs, axis=0)
    tol = tf.cast(tolerance, probs.dtype)

    def step(i, q, moved):
        del moved
        d = floored_distance(probs - q[None])  # [M, B]
        w = 1.0 / d
        q_new = tf.reduce_sum(w[..., None] * probs, axis=0) / tf.reduce_sum(w, axis=0)[..., None]
        return i + 1, q_new, tf.reduce_max(tf.norm(q_new - q, axis=-1))

    _, q, _ = tf.while_loop(
        lambda i, q, moved: tf.logical_and(i < max_iterations, moved > tol),
        step,
        (tf.constant(0), q0, tf.constant(np.inf, probs.dtype)),
    )
    return q


# ---- log-space forms, for gradients (attacks) --------------------------------------------
#
# log(max(aggregate(softmax(z)), 1e-12)) computed from float32 probabilities has no
# gradient where members are confident enough that the other classes fall below the floor
# (a logit margin above ~28), which distilled students evaluated at T = 1 can reach: the
# gradient masking of defensive distillation (Carlini & Wagner 2016). The forms below take
# the members' log-probabilities (log_softmax, exact at any margin) and mix them with
# logsumexp. On our MNIST and CIFAR-10 ensembles (logit noise on) both forms gave similar
# attack success, so attacks run both.


def log_mixture(log_probs: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """log sum_i w_i p_i from log p_i [M, B, K] and weights [M] or [M, B], stably."""
    w = tf.cast(weights, log_probs.dtype)
    while len(w.shape) < len(log_probs.shape):
        w = w[..., None]
    return tf.reduce_logsumexp(tf.math.log(w) + log_probs, axis=0)


def geometric_median_weights(probs: tf.Tensor, tolerance: float = 1e-6,
                             max_iterations: int = 100) -> tf.Tensor:
    """[M, B] Weiszfeld weights beta_i = (1 / d_i) / sum_j (1 / d_j), d_i = |p_i - q*|, at
    the geometric median q*: q* is (up to `tolerance`) sum_i beta_i p_i.

    Differentiable through all the Weiszfeld iterations, computed in float64: in float32 the
    backward pass overflows (each step multiplies by terms up to 1 / d_i, d_i down to the
    1e-12 floor) and gave NaN gradients on CIFAR-10.
    """
    p64 = tf.cast(probs, tf.float64)
    q = aggregate_geometric_median(p64, tolerance, max_iterations)
    inv = 1.0 / floored_distance(p64 - q[None])
    return tf.cast(inv / tf.reduce_sum(inv, axis=0, keepdims=True), probs.dtype)


def log_geometric_median(log_probs: tf.Tensor, tolerance: float = 1e-6,
                         max_iterations: int = 100) -> tf.Tensor:
    """log of the geometric median written as the mixture sum_i beta_i p_i.

    The gradient flows through the members' log-probabilities (exact at any confidence)
    and through the Weiszfeld weights beta (`geometric_median_weights`): moving the median
    means moving the weights of the members that hold it.
    """
    beta = geometric_median_weights(tf.exp(log_probs), tolerance, max_iterations)
    return log_mixture(log_probs, beta)


@dataclasses.dataclass(frozen=True)
class Aggregator:
    """A named aggregation with its parameters bound: `scores = aggregator(probs)`.

    `log_fn` maps member log-probabilities [M, B, K] to log-scores [B, K] that are
    differentiable at any confidence (see `log_mixture`); majority vote, piecewise constant,
    uses the mean's as its surrogate.
    """

    name: str
    fn: Callable[[tf.Tensor], tf.Tensor]
    log_fn: Callable[[tf.Tensor], tf.Tensor] | None = None
    weights: tuple[float, ...] | None = None  # the normalised weights of rw / sween

    def __call__(self, probs):
        return self.fn(probs)

    def log_scores(self, log_probs):
        if self.log_fn is None:
            raise ValueError(f"aggregator {self.name!r} has no log-space form")
        return self.log_fn(log_probs)


def per_member_aggregators(num_members: int) -> list[Aggregator]:
    """One aggregator per member (its own probabilities), so all members share the passes."""
    return [Aggregator(f"member_{i}", lambda p, i=i: p[i]) for i in range(num_members)]


def make_aggregator(
    name: str,
    num_members: int,
    weights: Sequence[float] | None = None,
    gm_tolerance: float = 1e-6,
    gm_max_iterations: int = 100,
) -> Aggregator:
    """Binds an aggregation's parameters, checking them against the ensemble size."""
    parsed = parse_aggregation(name)
    if parsed is None:
        raise ValueError(f"unknown aggregation {name!r}; allowed: {', '.join(AGGREGATIONS)}, "
                         f"or <{'|'.join(PREFIXABLE)}>_first<k> (the first k members)")
    base, k = parsed
    if k is not None:
        if k > num_members:
            raise ValueError(f"aggregation {name!r} needs {k} members; the ensemble has "
                             f"{num_members}")
        inner = make_aggregator(base, k, None, gm_tolerance, gm_max_iterations)
        return Aggregator(name, lambda p: inner.fn(p[:k]), lambda lp: inner.log_fn(lp[:k]))
    if name in WEIGHTED:
        if weights is None:
            raise ValueError(f"aggregation {name!r} needs weights (see cear_tf.cli.weights)")
        w = np.asarray(weights, np.float64)
        if w.shape != (num_members,):
            raise ValueError(f"{name} weights have {w.size} entries but the ensemble has "
                             f"{num_members} members")
        if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"{name} weights must be finite, >= 0 and not all 0, got {w.tolist()}")
        w = w / w.sum()
        const = tf.constant(w, tf.float32)
        return Aggregator(name, lambda p: aggregate_weighted(p, const),
                          lambda lp: log_mixture(lp, const), tuple(float(v) for v in w))
    if name == "gm":
        if gm_tolerance <= 0 or gm_max_iterations < 1:
            raise ValueError("gm needs tolerance > 0 and max_iterations >= 1")
        return Aggregator(name,
                          lambda p: aggregate_geometric_median(p, gm_tolerance, gm_max_iterations),
                          lambda lp: log_geometric_median(lp, gm_tolerance, gm_max_iterations))
    uniform = tf.fill([num_members], 1.0 / num_members)
    fn = {"single": aggregate_single, "mean": aggregate_mean, "mv": aggregate_majority_vote}[name]
    log_fn = aggregate_single if name == "single" else (lambda lp: log_mixture(lp, uniform))
    return Aggregator(name, fn, log_fn)
