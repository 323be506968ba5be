"""Randomized smoothing of an ensemble: one batched engine, every aggregator (Algorithm 1).

The base classifier is the ensemble F(x) = argmax_c A(p_1(x), ..., p_M(x))_c for an
aggregator A (mean, majority vote, robust weights, geometric median, ...). The smoothed
classifier is G(x) = argmax_c P(F(x + eps) = c), eps ~ N(0, sigma^2 I).

Guarantee (Cohen et al. 2019, Theorem 1, applied to F): if CERTIFY returns class c_A with
radius R, then with probability at least 1 - alpha over its Monte Carlo draws,
G(x + delta) = c_A for every ||delta||_2 < R. Members share eps within a draw, and each draw
is one Bernoulli trial of "F predicts c_A", so N draws give a valid Clopper-Pearson bound.

Pooled member votes (the released code's counting, `Certify/core.py`; docs/deviations.md C1)
are NOT a certificate. They count the M members' own argmax votes on each of the N draws as
N * M Bernoulli trials. Members see the same noisy input within a draw, so their votes are
dependent and the Clopper-Pearson bound on N * M "trials" does not bound any probability of
one classifier: it overstates p_A and the radius (its cap rises from
sigma * PhiInv(alpha^(1/N)) to sigma * PhiInv((alpha/2)^(1/(N M)))). The engine computes them
only on request (`pooled_votes=True`), from the same member passes as the sound counts, so a
reader can see what that counting does to a row; they are logged in their own columns.

With logit noise eps_l > 0 each member also sees its own eta_i ~ N(0, eps_l^2 I), drawn
afresh per member and per draw: the base classifier is then itself random, and the bound
still holds because its randomness is redrawn in every trial (Cohen et al., appendix).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import proportion_confint

from cear_tf.smoothing import input_contract
from cear_tf.smoothing.aggregate import Aggregator
from cear_tf.ensemble.deployed import DeployedEnsemble
# The noise streams live in cear_tf.smoothing.noise; these names stay importable from here.
from cear_tf.smoothing.noise import (NOISE_BLOCK, NOISE_SCHEME, NoiseDomain, Phase,  # noqa: F401
                           block_noise, stream_key)

ABSTAIN = -1
# The key of the pooled member-vote counts in sample_counts' result (never an aggregator name:
# aggregator names are the aggregations' own, see cear_tf.smoothing.aggregate).
POOLED = "pooled member votes"
# The released code's confidence level for pooled votes: beta.ppf(alpha / 2, ...), the lower
# end of a two-sided (1 - alpha) Clopper-Pearson interval, i.e. one-sided level alpha / 2.
POOLED_LEVEL = "two-sided Clopper-Pearson (1 - alpha), i.e. one-sided alpha/2, as Certify/core.py"


class NonFiniteError(ValueError):
    """A member returned NaN or Inf logits."""


@dataclasses.dataclass(frozen=True)
class Certificate:
    prediction: int  # ABSTAIN (-1) when the bound does not exceed 1/2
    radius: float
    count: int  # n_A: estimation draws voting for the selected class
    num: int  # N
    p_lower: float
    # The pooled member-vote "certificate" of the same draws (not a valid certificate; see the
    # module docstring), when the engine was asked for it.
    pooled: "Certificate | None" = None


@dataclasses.dataclass(frozen=True)
class Certificates:
    """CERTIFY's results on a batch of images, as arrays [B]."""

    image_id: np.ndarray  # the noise stream of each image
    prediction: np.ndarray  # class, or ABSTAIN (-1)
    radius: np.ndarray  # 0.0 where abstained
    count: np.ndarray  # n_A
    num: np.ndarray  # N
    p_lower: np.ndarray

    @classmethod
    def stack(cls, certificates: Sequence[Certificate], ids) -> "Certificates":
        return cls(np.asarray(ids, np.int64),
                   np.array([c.prediction for c in certificates], np.int64),
                   np.array([c.radius for c in certificates], np.float64),
                   np.array([c.count for c in certificates], np.int64),
                   np.array([c.num for c in certificates], np.int64),
                   np.array([c.p_lower for c in certificates], np.float64))


def content_id(image: np.ndarray) -> int:
    """A 62-bit id derived from an image's float32 pixels (SHA-256): the default noise stream
    of an image certified without an explicit id. Different images get different streams (up
    to a 2^-62 collision), the same image always the same."""
    import hashlib
    pixels = np.ascontiguousarray(np.asarray(image, np.float32))
    digest = hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p from n_a successes in n."""
    if n_a <= 0:
        return 0.0
    return float(proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0])


def _upper_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    if n_a >= n:
        return 1.0
    return float(proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[1])


@dataclasses.dataclass(frozen=True)
class RadiusDecision:
    prediction: int  # c_A when a radius > 0 was certified, else ABSTAIN
    certified: bool  # certified at the target radius
    radius: float  # the radius certified at the deciding stage (may be below the target)
    samples: int  # estimation draws used
    stage: int  # index of the deciding stage


def certified_radius(p_lower: float, sigma: float) -> float:
    """sigma * PhiInv(p_lower): the radius for p_A >= p_lower, p_B <= 1 - p_lower."""
    return float(sigma * norm.ppf(p_lower))


def certify_decision(selection: np.ndarray, estimation: np.ndarray, n: int, alpha: float,
                     sigma: float) -> Certificate:
    """CERTIFY's decision from class counts (Cohen et al. 2019).

    c_A = argmax of the n0 selection counts; n_A = its count among the n estimation draws;
    p_lower = one-sided (1 - alpha) Clopper-Pearson bound. If p_lower > 1/2, then with
    probability >= 1 - alpha over the estimation draws the smoothed classifier returns c_A
    everywhere within L2 radius sigma * PhiInv(p_lower) of x; otherwise abstain (-1, 0.0).
    """
    c_a = int(np.argmax(selection))
    n_a = int(estimation[c_a])
    p_lower = lower_confidence_bound(n_a, n, alpha)
    if p_lower > 0.5:
        return Certificate(c_a, certified_radius(p_lower, sigma), n_a, n, p_lower)
    return Certificate(ABSTAIN, 0.0, n_a, n, p_lower)


def pooled_decision(selection: np.ndarray, estimation: np.ndarray, n: int, num_members: int,
                    alpha: float, sigma: float) -> Certificate:
    """The released code's decision from pooled member votes: NOT A CERTIFICATE.

    As `Certify/core.py`: c_A = argmax of the pooled selection votes; n_A its pooled count
    among the estimation draws' n * M member votes, taken as n * M independent trials;
    p_lower = beta.ppf(alpha / 2, n_A, n M - n_A + 1) (POOLED_LEVEL); abstain only when
    p_lower < 1/2. The M votes of one draw are dependent, so p_lower bounds nothing and the
    radius is not guaranteed (module docstring). Kept to measure what the counting does.
    """
    c_a = int(np.argmax(selection))
    n_a = int(estimation[c_a])
    trials = int(n) * int(num_members)
    p_lower = lower_confidence_bound(n_a, trials, alpha / 2)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, n_a, trials, p_lower)
    return Certificate(c_a, certified_radius(p_lower, sigma), n_a, trials, p_lower)


class Smooth:
    """Monte Carlo smoothing of an ensemble under several aggregators at once.

    Args:
      members: callables from float32 images [B, H, W, C] in [0, 1] to logits [B, K].
      num_classes: K.
      sigma: smoothing noise std (sigma_v), > 0.
      aggregators: the aggregations to evaluate on the same member passes.
      logit_noise: per-member input noise eps_l (0 = Algorithm 1 as printed).
      clip: clip noisy inputs to [0, 1] (part of the base classifier, so still sound).
      seed: the noise of image `idx` is a function of (seed, noise_domain, idx) only, so
        reruns, resumed runs, shards and runs at another batch size reproduce the same draws.
      noise_domain: which use this engine serves (NoiseDomain); each has its own streams.
      fused: optional ensemble.FusedMembers, the same members run as one network; used for
        every pass over all members (the per-member callables still serve K-consensus).
        Counts equal the unfused engine's up to float rounding.
      strategy: a tf.distribute strategy; with R replicas, R noise batches run at once, one
        per replica, and their counts are summed. The batches (and so the counts) are the
        same as on one device.
      consensus_k: K-consensus (Horvath et al. 2022): on each draw run the first K members;
        where they agree on a class that class is the ensemble's vote and the other members
        are not run; elsewhere all members run and the aggregator decides. This is another
        (deterministic) base classifier, so every guarantee above holds for it. 0 = off.
      jit_compile: compile the sampling step with XLA (not with K-consensus, whose
        data-dependent shapes XLA cannot compile).
      check_inputs: refuse images that break the input contract (cear_tf.smoothing.input_contract:
        [H, W, C] of the members' input shape, float32, finite, in [0, 1]) before any member
        runs, with an InputContractError naming the rule, the image and the value. False
        only for members made for another range.
      pooled_votes: also count the members' own votes pooled (the released code's counting,
        NOT a certificate; module docstring): `certify` then attaches each aggregator's
        certificate the pooled decision of the same draws. Needs every member on every draw,
        so not with K-consensus.
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
        check_inputs: bool = True,
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
        self.logit_noise = self.ensemble.logit_noise
        self.clip = self.ensemble.clip
        self.seed = int(seed)
        self.noise_domain = NoiseDomain(noise_domain)
        self.fused = fused
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
        self.check_inputs = bool(check_inputs)
        self.input_shape = _image_shape(members[0])
        self._draw_counts = tf.function(self._draw_counts_graph, reduce_retracing=True,
                                        jit_compile=jit_compile or None)
        self._replicated_counts = tf.function(self._replicated_counts_graph,
                                              reduce_retracing=True)
        self._draw_probabilities = tf.function(self._noisy_probabilities, reduce_retracing=True)

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.aggregators]

    # -- public API ----------------------------------------------------------------------

    def certify(self, x: np.ndarray, n0: int, n: int, alpha: float, batch_size: int,
                idx: int) -> dict[str, Certificate]:
        """CERTIFY (Cohen et al.) for every aggregator, on one image x [H, W, C].

        n0 draws select c_A per aggregator; n fresh draws count its votes n_A;
        p_lower = one-sided (1 - alpha) Clopper-Pearson bound. If p_lower > 1/2 the
        aggregator's smoothed ensemble is certified at radius sigma * PhiInv(p_lower)
        (with probability >= 1 - alpha); otherwise it abstains (-1, 0.0).
        """
        _check_positive(n0=n0, n=n, batch_size=batch_size)
        _check_alpha(alpha)
        x = self._checked(x, idx)
        selection = self._sample_counts(x, n0, batch_size, idx, Phase.SELECT)
        estimation = self._sample_counts(x, n, batch_size, idx, Phase.ESTIMATE)
        pooled = None
        if self.pooled_votes:
            pooled = pooled_decision(selection[POOLED], estimation[POOLED], n,
                                     len(self.members), alpha, self.sigma)
        return {name: dataclasses.replace(
                    certify_decision(selection[name], estimation[name], n, alpha, self.sigma),
                    pooled=pooled)
                for name in self.names}

    def predict(self, x: np.ndarray, n: int, alpha: float, batch_size: int,
                idx: int) -> dict[str, int]:
        """PREDICT (Cohen et al.): the top class if a two-sided binomial test of the top two
        counts rejects equality at level alpha, else ABSTAIN. The returned class differs
        from G(x) with probability at most alpha."""
        _check_positive(n=n, batch_size=batch_size)
        _check_alpha(alpha)
        counts = self._sample_counts(self._checked(x, idx), n, batch_size, idx, Phase.PREDICT)
        out = {}
        for name in self.names:
            order = np.argsort(-counts[name], kind="stable")
            n_a, n_b = int(counts[name][order[0]]), int(counts[name][order[1]])
            p_value = binomtest(n_a, n_a + n_b, 0.5).pvalue
            out[name] = int(order[0]) if p_value <= alpha else ABSTAIN
        return out

    def certify_batch(self, images: np.ndarray, n0: int, n: int, alpha: float,
                      batch_size: int = 1000,
                      image_ids: Sequence[int] | None = None) -> dict[str, "Certificates"]:
        """CERTIFY on every image of `images` [B, H, W, C]: per aggregator, arrays of
        predictions (-1 = abstain), radii, counts and bounds (see `certify` for the
        guarantee, which holds for each image at level alpha).

        The noise of image j is the stream of `image_ids[j]`: pass the images' indices in
        their data set to reproduce `cear_tf.cli.certify`'s rows. Without ids each image's key is
        derived from its pixels (`content_id`), so no two different images share draws and
        the same image always gets the same ones.
        """
        images, ids = self._checked_batch(images, image_ids)
        results = [self.certify(x, n0, n, alpha, batch_size, idx=i) for x, i in zip(images, ids)]
        return {name: Certificates.stack([r[name] for r in results], ids)
                for name in self.names}

    def predict_batch(self, images: np.ndarray, n: int, alpha: float, batch_size: int = 1000,
                      image_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """PREDICT on every image of `images`: per aggregator an int array of classes (-1 =
        abstain); each answer differs from the smoothed classifier's with probability at most
        alpha. Image ids as for `certify_batch`."""
        images, ids = self._checked_batch(images, image_ids)
        results = [self.predict(x, n, alpha, batch_size, idx=i) for x, i in zip(images, ids)]
        return {name: np.array([r[name] for r in results], np.int64) for name in self.names}

    def _checked(self, x, idx):
        """One image after the input contract (unless check_inputs is off)."""
        if not self.check_inputs:
            return x
        return input_contract.check_image(x, self.input_shape, idx)

    def _checked_batch(self, images, image_ids):
        """(images [B, H, W, C] float32, their ids) after the input contract: refused images
        are named by their id where given, else by their position."""
        if self.check_inputs:
            ids = None if image_ids is None else [int(i) for i in image_ids]
            if ids is not None and len(ids) != len(images):
                raise ValueError(f"{len(ids)} image ids for {len(images)} images")
            images = input_contract.check_images(images, self.input_shape, ids)
        return images, self._image_ids(images, image_ids)

    @staticmethod
    def _image_ids(images, image_ids):
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
        if image_ids is None:
            return [content_id(x) for x in images]
        ids = [int(i) for i in image_ids]
        if len(ids) != len(images):
            raise ValueError(f"{len(ids)} image ids for {len(images)} images")
        if len(set(ids)) != len(ids):
            raise ValueError("image ids repeat: those images would share their noise draws")
        return ids

    def certify_radius(self, x: np.ndarray, radius: float, n0: int, stages: Sequence[int],
                       alpha: float, batch_size: int, idx: int) -> dict[str, "RadiusDecision"]:
        """Adaptive sampling (Horvath et al. 2022): is G certified at `radius`?

        G is certified at r iff p_A > p_thr = Phi(r / sigma). After n0 selection draws pick
        c_A, estimation draws are added until the cumulative count reaches stages[0],
        stages[1], ...; at each stage the one-sided Clopper-Pearson bounds at level
        alpha / len(stages) on the cumulative counts decide: lower bound > p_thr certifies
        (stop), upper bound < p_thr abstains early (stop); the last stage decides. By the
        union bound over the stages, a certificate is wrong with probability at most alpha,
        as for CERTIFY. Easy images stop at the first stage, hence the savings.
        """
        _check_positive(n0=n0, batch_size=batch_size)
        _check_alpha(alpha)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        stages = [int(n) for n in stages]
        if not stages or stages[0] < 1 or any(b <= a for a, b in zip(stages, stages[1:])):
            raise ValueError(f"stages must be increasing sample counts >= 1, got {stages}")
        level = alpha / len(stages)
        p_thr = float(norm.cdf(radius / self.sigma))
        x = self._checked(x, idx)
        selection = self._sample_counts(x, n0, batch_size, idx, Phase.SELECT)
        c_a = {name: int(np.argmax(selection[name])) for name in self.names}
        counts = {name: 0 for name in self.names}
        decided: dict[str, RadiusDecision] = {}
        drawn = 0
        for j, total in enumerate(stages):
            # Stage j adds draws [drawn, total) of the estimation stream: the cumulative
            # sample is the first `total` draws, as a plain CERTIFY with N = total sees.
            new = self._sample_counts(x, total - drawn, batch_size, idx, Phase.ESTIMATE, drawn)
            drawn = total
            last = j == len(stages) - 1
            for name in self.names:
                if name in decided:
                    continue
                counts[name] += int(new[name][c_a[name]])
                low = lower_confidence_bound(counts[name], total, level)
                if low > p_thr and low > 0.5:
                    decided[name] = RadiusDecision(c_a[name], True, certified_radius(low, self.sigma),
                                                   total, j)
                elif last or _upper_confidence_bound(counts[name], total, level) < p_thr:
                    certified = low > 0.5
                    decided[name] = RadiusDecision(
                        c_a[name] if certified else ABSTAIN, False,
                        certified_radius(low, self.sigma) if certified else 0.0, total, j)
            if len(decided) == len(self.names):
                break
        return decided

    def sample_counts(self, x: np.ndarray, num: int, batch_size: int, idx: int,
                      phase: Phase = Phase.ESTIMATE, first_draw: int = 0) -> dict[str, np.ndarray]:
        """Class counts [K] per aggregator over draws [first_draw, first_draw + num) of the
        `phase` stream of image `idx` (and, with pooled_votes, the members' pooled votes [K]
        under the key POOLED, summing to num * M).

        Draws stream in batches of `batch_size`, so memory does not grow with `num`; only
        the counts leave the graph. The counts do not depend on `batch_size`.
        """
        return self._sample_counts(self._checked(x, idx), num, batch_size, idx, phase,
                                   first_draw)

    def _sample_counts(self, x, num, batch_size, idx, phase=Phase.ESTIMATE, first_draw=0):
        keys = self.names + ([POOLED] if self.pooled_votes else [])
        totals = np.zeros((len(keys), self.num_classes), np.int64)
        x = tf.convert_to_tensor(x, tf.float32)
        key = self.stream_key(idx, phase)
        batches = _batch_plan(num, batch_size, first_draw)
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
            self._raise_if_nonfinite(bad.numpy(), idx)
            totals += counts.numpy()
            self.member_passes += int(passes)
            if self.progress is not None:
                self.progress(int(totals[0].sum()), int(num))
        return dict(zip(keys, totals))

    def noisy_member_probabilities(self, x: np.ndarray, num: int, batch_size: int,
                                   idx: int) -> np.ndarray:
        """[M, num, K] member softmax outputs on `num` smoothing draws of x (SWEEN fitting)."""
        x = tf.convert_to_tensor(self._checked(x, idx), tf.float32)
        key = self.stream_key(idx, Phase.ESTIMATE)
        parts = []
        for first, this in _batch_plan(num, batch_size):
            probs, finite = self._draw_probabilities(x, key, tf.constant(first, tf.int64),
                                                     tf.constant(this, tf.int32))
            self._raise_if_nonfinite(np.logical_not(finite.numpy()), idx)
            parts.append(probs.numpy())
        return np.concatenate(parts, axis=1)

    def stream_key(self, idx: int, phase: Phase) -> tf.Tensor:
        """The int64 [2] key of the noise stream (seed, domain, image idx, phase)."""
        if int(idx) < 0:
            raise ValueError(f"image index must be >= 0, got {idx}")
        return stream_key(self.seed, self.noise_domain, tf.constant(int(idx), tf.int64),
                          Phase(phase))

    @staticmethod
    def _raise_if_nonfinite(bad, idx):
        if np.any(bad):
            member = int(np.argmax(np.asarray(bad) > 0))
            raise NonFiniteError(f"member {member} returned NaN or Inf logits on image {idx}")

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

    def _smoothed_images(self, x, key, first, num):
        """x + sigma * (draws [first, first + num) of the stream's smoothing noise)."""
        noise = block_noise(tf.random.experimental.stateless_fold_in(key, 0), first, num,
                            tf.shape(x))
        return x[None] + self.sigma * noise

    def _noisy_probabilities(self, x, key, first, num):
        return self.member_probabilities(self._smoothed_images(x, key, first, num), key, first)

    def draw_counts(self, x: tf.Tensor, key: tf.Tensor, first: tf.Tensor,
                    num: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Graph-level vote counting: ([A, K] int64 class counts of every aggregator, [M]
        finiteness flags of the members) on draws [first, first + num) of the stream `key`
        (see `stream_key`). Pure TensorFlow, so it can be traced into another graph (the
        exported smoothed SavedModel does); `sample_counts` is the eager loop around it."""
        counts, finite, _ = self._draw_counts_graph(x, key, first, num)
        return counts, finite

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


def _image_shape(member) -> tuple[int, ...] | None:
    """(H, W, C) a member takes: a cear_tf member's input_shape, a Keras model's without its
    batch axis; None when unknown (a plain callable), and then the contract checks no shape."""
    shape = getattr(member, "input_shape", None)
    if not shape:
        return None
    shape = tuple(shape)
    if len(shape) == 4:
        shape = shape[1:]
    return shape if len(shape) == 3 and all(isinstance(d, int) for d in shape) else None


def _batch_plan(num: int, batch_size: int, first_draw: int = 0) -> list[tuple[int, int]]:
    """(first draw, draws) of each batch covering draws [first_draw, first_draw + num)."""
    plan, first, end = [], int(first_draw), int(first_draw) + int(num)
    if first < 0:
        raise ValueError(f"first_draw must be >= 0, got {first_draw}")
    while first < end:
        this = min(int(batch_size), end - first)
        plan.append((first, this))
        first += this
    return plan


def check_sample_size(n: int, alpha: float) -> None:
    """Refuses an N with which no image can be certified: even N votes of N give the lower
    bound alpha^(1/N), which exceeds 1/2 only for N > log2(1/alpha)."""
    n = int(n)
    if alpha ** (1.0 / n) <= 0.5:
        need = int(math.floor(math.log2(1.0 / alpha))) + 1
        raise ValueError(f"--N={n} cannot certify any image at --alpha={alpha:g}: even {n} "
                         f"votes of {n} give a lower bound of {alpha ** (1.0 / n):.3f} <= 0.5; "
                         f"use --N >= {need}")


def _check_positive(**values):
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def _check_alpha(alpha):
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
