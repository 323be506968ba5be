"""The sampling engine of randomized smoothing: member passes on noise draws -> class counts.

One batched TensorFlow graph runs the members on a batch of draws x + sigma * eps and counts
the votes of every aggregator from those same passes (Algorithm 1 of the paper, for all
aggregators at once). The draws of an image are a function of (seed, noise domain, image id,
phase, draw index) only (cear_tf.smoothing.noise), so counts do not depend on the batch size,
the order of images, shards, resumes or the number of replicas.

What the counts decide (CERTIFY, PREDICT, adaptive sampling) is cear_tf.smoothing.decisions';
the public front that checks inputs and asks for decisions is cear_tf.smoothing.core.Smooth.

Each draw is one trial of the base classifier F(x + eps) = argmax_c A(p_1, ..., p_M)_c with
members sharing eps within a draw, so N draws are N independent Bernoulli trials of
"F predicts c_A". With logit noise eps_l > 0 each member also sees its own eta_i, drawn afresh
per member and per draw: the base classifier is then itself random, redrawn in every trial,
and the trials stay independent (Cohen et al., appendix). Pooled member votes (POOLED,
`pooled_votes=True`) count the M members' own votes per draw; they are dependent within a
draw and are NOT trials of one classifier (decisions.pooled_decision).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from cear_tf.ensemble.deployed import DeployedEnsemble
from cear_tf.smoothing.aggregate import Aggregator
from cear_tf.smoothing.noise import NoiseDomain, Phase, block_noise, stream_key

# The key of the pooled member-vote counts in sample_counts' result (never an aggregator name:
# aggregator names are the aggregations' own, see cear_tf.smoothing.aggregate).
POOLED = "pooled member votes"


class NonFiniteError(ValueError):
    """A member returned NaN or Inf logits."""


class SamplingEngine:
    """Counts the votes of several aggregators of one ensemble on keyed noise draws.

    Args: as cear_tf.smoothing.core.Smooth, whose engine this is (all but check_inputs).
    """

    def __init__(
        self,
        members: Sequence[Callable[[tf.Tensor], tf.Tensor]],
        num_classes: int,
        sigma: float,
        aggregators: Sequence[Aggregator],
        logit_noise: float = 0.0,
        clip: bool = False,
        seed: int = 0,
        strategy: tf.distribute.Strategy | None = None,
        consensus_k: int = 0,
        jit_compile: bool = False,
        noise_domain: NoiseDomain = NoiseDomain.CERTIFY,
        fused=None,
        pooled_votes: bool = False,
    ):
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        # Member execution (per-member noise, clipping, the fused network) is the deployed
        # ensemble's, shared with the attacks.
        self.ensemble = DeployedEnsemble(members, logit_noise, clip, fused)
        if not aggregators:
            raise ValueError("at least one aggregator is needed")
        names = [a.name for a in aggregators]
        if len(set(names)) != len(names):
            raise ValueError(f"aggregators repeat a name: {names}")
        self.members = self.ensemble.members
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.aggregators = list(aggregators)
        self.seed = int(seed)
        self.noise_domain = NoiseDomain(noise_domain)
        if not 0 <= consensus_k <= len(members):
            raise ValueError(f"consensus_k must be in [0, {len(members)}], got {consensus_k}")
        self.consensus_k = int(consensus_k)
        self.member_passes = 0  # member forward passes run so far (per draw and member)
        # Called as progress(draws done, draws asked) after each batch of a sample_counts
        # call, so a caller can report on images that take minutes (ResNets at N = 100,000).
        self.progress = None
        self.strategy = strategy or tf.distribute.get_strategy()
        if jit_compile and consensus_k:
            raise ValueError("jit_compile (XLA) cannot be combined with consensus_k")
        if pooled_votes and consensus_k:
            raise ValueError("pooled member votes need every member on every draw; they "
                             "cannot be combined with consensus_k")
        self.pooled_votes = bool(pooled_votes)
        self._draw_counts = tf.function(self._draw_counts_graph, reduce_retracing=True,
                                        jit_compile=jit_compile or None)
        self._replicated_counts = tf.function(self._replicated_counts_graph,
                                              reduce_retracing=True)
        self._draw_probabilities = tf.function(self._noisy_probabilities, reduce_retracing=True)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.aggregators]

    def sample_counts(self, x: np.ndarray, num: int, batch_size: int, idx: int,
                      phase: Phase = Phase.ESTIMATE, first_draw: int = 0) -> dict[str, np.ndarray]:
        """Class counts [K] per aggregator over draws [first_draw, first_draw + num) of the
        `phase` stream of image `idx` (and, with pooled_votes, the members' pooled votes [K]
        under the key POOLED, summing to num * M). `x` is not checked here (Smooth does).

        Draws stream in batches of `batch_size`, so memory does not grow with `num`; only
        the counts leave the graph. The counts do not depend on `batch_size`.
        """
        keys = self.names + ([POOLED] if self.pooled_votes else [])
        totals = np.zeros((len(keys), self.num_classes), np.int64)
        x = tf.convert_to_tensor(x, tf.float32)
        key = self.stream_key(idx, phase)
        batches = batch_plan(num, batch_size, first_draw)
        replicas = self.strategy.num_replicas_in_sync
        for start in range(0, len(batches), replicas):
            group = batches[start:start + replicas]
            if replicas == 1:
                counts, bad, passes = self._draw_counts(x, key, tf.constant(group[0][0], tf.int64),
                                                        tf.constant(group[0][1], tf.int32))
                bad = tf.logical_not(bad)
            else:
                # Idle replicas run one throw-away draw (zero-size batches break some
                # kernels) whose votes are masked out in the graph.
                group += [(group[0][0], 0)] * (replicas - len(group))
                counts, bad, passes = self._replicated_counts(
                    x, key, tf.constant([f for f, _ in group], tf.int64),
                    tf.constant([n for _, n in group], tf.int32))
            _raise_if_nonfinite(bad.numpy(), idx)
            totals += counts.numpy()
            self.member_passes += int(passes)
            if self.progress is not None:
                self.progress(int(totals[0].sum()), int(num))
        return dict(zip(keys, totals))

    def noisy_member_probabilities(self, x: np.ndarray, num: int, batch_size: int,
                                   idx: int) -> np.ndarray:
        """[M, num, K] member softmax outputs on `num` smoothing draws of x (SWEEN fitting)."""
        x = tf.convert_to_tensor(x, tf.float32)
        key = self.stream_key(idx, Phase.ESTIMATE)
        parts = []
        for first, this in batch_plan(num, batch_size):
            probs, finite = self._draw_probabilities(x, key, tf.constant(first, tf.int64),
                                                     tf.constant(this, tf.int32))
            _raise_if_nonfinite(np.logical_not(finite.numpy()), idx)
            parts.append(probs.numpy())
        return np.concatenate(parts, axis=1)

    def stream_key(self, idx: int, phase: Phase) -> tf.Tensor:
        """The int64 [2] key of the noise stream (seed, domain, image idx, phase)."""
        if int(idx) < 0:
            raise ValueError(f"image index must be >= 0, got {idx}")
        return stream_key(self.seed, self.noise_domain, tf.constant(int(idx), tf.int64),
                          Phase(phase))

    # -- graph ---------------------------------------------------------------------------

    def member_probabilities(self, images: tf.Tensor, key: tf.Tensor, first: tf.Tensor,
                             members: range | None = None,
                             rows: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """[M, B, K] softmax outputs on `images` (already smoothed) and [M] finiteness flags
        (DeployedEnsemble.member_probabilities): `images` are draws [first, first + B) of the
        stream `key` (or, with `rows`, the draws first + rows of it); with logit noise member
        i sees images + eta_i from its own stream, the same draw however the members are
        grouped or batched."""
        return self.ensemble.member_probabilities(images, key, first, members, rows)

    def draw_counts(self, x: tf.Tensor, key: tf.Tensor, first: tf.Tensor,
                    num: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Graph-level vote counting: ([A, K] int64 class counts of every aggregator, [M]
        finiteness flags of the members) on draws [first, first + num) of the stream `key`
        (see `stream_key`). Pure TensorFlow, so it can be traced into another graph (the
        exported smoothed SavedModel does); `sample_counts` is the eager loop around it."""
        counts, finite, _ = self._draw_counts_graph(x, key, first, num)
        return counts, finite

    def _smoothed_images(self, x, key, first, num):
        """x + sigma * (draws [first, first + num) of the stream's smoothing noise)."""
        noise = block_noise(tf.random.experimental.stateless_fold_in(key, 0), first, num,
                            tf.shape(x))
        return x[None] + self.sigma * noise

    def _noisy_probabilities(self, x, key, first, num):
        return self.member_probabilities(self._smoothed_images(x, key, first, num), key, first)

    def _draw_counts_graph(self, x, key, first, num):
        """Votes of every aggregator on `num` draws -> ([A, K] counts, [M] finite, passes)."""
        if self.consensus_k:
            return self._consensus_counts(x, key, first, num)
        probs, finite = self._noisy_probabilities(x, key, first, num)
        votes = [tf.argmax(aggregator(probs), axis=-1) for aggregator in self.aggregators]
        passes = tf.cast(num, tf.int64) * len(self.members)
        counts = self._bincount(votes)
        if self.pooled_votes:
            # Every member's own vote on every draw: [M, B] -> [1, K].
            member_votes = tf.reshape(tf.argmax(probs, axis=-1), [-1])
            counts = tf.concat([counts, self._bincount([member_votes])], axis=0)
        return counts, finite, passes

    def _bincount(self, votes):
        # A one-hot sum rather than tf.math.bincount, whose output size XLA cannot infer.
        return tf.stack([tf.reduce_sum(tf.one_hot(v, self.num_classes, dtype=tf.int64), axis=0)
                         for v in votes])

    def _consensus_counts(self, x, key, first, num):
        """K-consensus (Horvath et al. 2022): the first k members vote; where they agree that
        is the ensemble's vote, elsewhere all members run and each aggregator decides."""
        k, m = self.consensus_k, len(self.members)
        images = self._smoothed_images(x, key, first, num)
        first_probs, finite_first = self.member_probabilities(images, key, first, range(k))
        first_votes = tf.argmax(first_probs, axis=-1)  # [K, B]
        agree = tf.reduce_all(tf.equal(first_votes, first_votes[:1]), axis=0)
        rows = tf.where(tf.logical_not(agree))[:, 0]
        finite = finite_first
        if k < m:
            def run_rest():
                return self.member_probabilities(tf.gather(images, rows), key, first,
                                                 range(k, m), rows=tf.cast(rows, tf.int32))

            def skip_rest():  # every draw agreed: zero-size batches are not run through models
                return (tf.zeros([m - k, 0, self.num_classes]), tf.ones([m - k], tf.bool))

            rest, finite_rest = tf.cond(tf.size(rows) > 0, run_rest, skip_rest)
            finite = tf.concat([finite_first, finite_rest], axis=0)
            probs = tf.concat([tf.gather(first_probs, rows, axis=1), rest], axis=0)
        else:
            probs = tf.gather(first_probs, rows, axis=1)
        votes = []
        for aggregator in self.aggregators:
            decided = tf.argmax(aggregator(probs), axis=-1)
            votes.append(tf.tensor_scatter_nd_update(first_votes[0], rows[:, None], decided))
        passes = tf.cast(num, tf.int64) * k + tf.size(rows, out_type=tf.int64) * (m - k)
        return self._bincount(votes), finite, passes

    def _replicated_counts_graph(self, x, key, firsts, nums):
        def replica_fn():
            r = tf.distribute.get_replica_context().replica_id_in_sync_group
            active = tf.cast(nums[r] > 0, tf.int64)
            counts, finite, passes = self._draw_counts_graph(x, key, firsts[r],
                                                             tf.maximum(nums[r], 1))
            return (counts * active, tf.cast(tf.logical_not(finite), tf.int64) * active,
                    passes * active)

        outputs = self.strategy.run(replica_fn)
        total = tf.distribute.ReduceOp.SUM
        return tuple(self.strategy.reduce(total, o, axis=None) for o in outputs)


def _raise_if_nonfinite(bad, idx):
    if np.any(bad):
        member = int(np.argmax(np.asarray(bad) > 0))
        raise NonFiniteError(f"member {member} returned NaN or Inf logits on image {idx}")


def batch_plan(num: int, batch_size: int, first_draw: int = 0) -> list[tuple[int, int]]:
    """(first draw, draws) of each batch covering draws [first_draw, first_draw + num)."""
    plan, first, end = [], int(first_draw), int(first_draw) + int(num)
    if first < 0:
        raise ValueError(f"first_draw must be >= 0, got {first_draw}")
    while first < end:
        this = min(int(batch_size), end - first)
        plan.append((first, this))
        first += this
    return plan
