"""Randomized smoothing of an ensemble (Cohen et al. 2019), under every aggregator at once.

The base classifier is the ensemble F(x) = argmax_c A(p_1(x), ..., p_M(x))_c for an
aggregator A (mean, majority vote, robust weights, geometric median, ...). The smoothed
classifier is G(x) = argmax_c P(F(x + eps) = c), eps ~ N(0, sigma^2 I).

Guarantee (Cohen et al., Theorem 1, applied to F): if `Smooth.certify` returns class c_A with
radius R, then with probability at least 1 - alpha over its Monte Carlo draws,
G(x + delta) = c_A for every ||delta||_2 < R. If `Smooth.predict` returns a class, it differs
from G(x) with probability at most alpha.

`Smooth` is the front: it checks images against the input contract, asks the sampling engine
(cear_tf.smoothing.engine) for class counts, and lets the plain functions of
cear_tf.smoothing.decisions decide. Pooled member votes (the released code's counting,
`pooled_votes=True`) ride along as `Certificate.pooled` and are NOT a certificate
(decisions.pooled_decision; docs/deviations.md C1).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from cear_tf.smoothing import input_contract
from cear_tf.smoothing.aggregate import Aggregator
from cear_tf.smoothing.decisions import (
    ABSTAIN,
    Certificate,
    Certificates,
    RadiusDecision,
    certify_decision,
    check_alpha,
    check_positive,
    content_id,
    pooled_decision,
    predict_decision,
    radius_decision,
    radius_threshold,
)
from cear_tf.smoothing.engine import POOLED, SamplingEngine
from cear_tf.smoothing.noise import NoiseDomain, Phase

__all__ = ["ABSTAIN", "Certificate", "Certificates", "RadiusDecision", "Smooth"]


def _engine_attribute(name: str):
    return property(lambda self: getattr(self.engine, name),
                    doc=f"The sampling engine's `{name}` (cear_tf.smoothing.engine).")


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
      fused: optional loading.FusedMembers, the same members run as one network; used for
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
        NOT a certificate): `certify` then attaches to each aggregator's certificate the
        pooled decision of the same draws. Needs every member on every draw, so not with
        K-consensus.
    """

    members = _engine_attribute("members")
    num_classes = _engine_attribute("num_classes")
    sigma = _engine_attribute("sigma")
    aggregators = _engine_attribute("aggregators")
    names = _engine_attribute("names")
    seed = _engine_attribute("seed")
    consensus_k = _engine_attribute("consensus_k")
    noise_domain = _engine_attribute("noise_domain")
    pooled_votes = _engine_attribute("pooled_votes")
    member_passes = _engine_attribute("member_passes")
    ensemble = _engine_attribute("ensemble")

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
        self.engine = SamplingEngine(members, num_classes, sigma, aggregators, logit_noise,
                                     clip, seed, strategy, consensus_k, jit_compile,
                                     noise_domain, fused, pooled_votes)
        self.check_inputs = bool(check_inputs)
        self.input_shape = _image_shape(members[0])

    @property
    def progress(self):
        """Called as progress(draws done, draws asked) after each batch of draws."""
        return self.engine.progress

    @progress.setter
    def progress(self, report) -> None:
        self.engine.progress = report

    def certify(self, x: np.ndarray, n0: int, n: int, alpha: float, batch_size: int,
                idx: int) -> dict[str, Certificate]:
        """CERTIFY (Cohen et al.) for every aggregator, on one image x [H, W, C].

        n0 draws select c_A per aggregator; n fresh draws count its votes n_A;
        p_lower = one-sided (1 - alpha) Clopper-Pearson bound. If p_lower > 1/2 the
        aggregator's smoothed ensemble is certified at radius sigma * PhiInv(p_lower)
        (with probability >= 1 - alpha); otherwise it abstains (-1, 0.0).
        """
        check_positive(n0=n0, n=n, batch_size=batch_size)
        check_alpha(alpha)
        return self._certify(self._checked(x, idx), n0, n, alpha, batch_size, idx)

    def _certify(self, x, n0, n, alpha, batch_size, idx) -> dict[str, Certificate]:
        """`certify` on an image and arguments already checked."""
        selection = self.engine.sample_counts(x, n0, batch_size, idx, Phase.SELECT)
        estimation = self.engine.sample_counts(x, n, batch_size, idx, Phase.ESTIMATE)
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
        """PREDICT (Cohen et al.) for every aggregator: the top class if a two-sided binomial
        test of the top two counts rejects equality at level alpha, else ABSTAIN. The
        returned class differs from G(x) with probability at most alpha."""
        check_positive(n=n, batch_size=batch_size)
        check_alpha(alpha)
        return self._predict(self._checked(x, idx), n, alpha, batch_size, idx)

    def _predict(self, x, n, alpha, batch_size, idx) -> dict[str, int]:
        """`predict` on an image and arguments already checked."""
        counts = self.engine.sample_counts(x, n, batch_size, idx, Phase.PREDICT)
        return {name: predict_decision(counts[name], alpha) for name in self.names}

    def certify_batch(self, images: np.ndarray, n0: int, n: int, alpha: float,
                      batch_size: int = 1000,
                      image_ids: Sequence[int] | None = None) -> dict[str, Certificates]:
        """CERTIFY on every image of `images` [B, H, W, C]: per aggregator, arrays of
        predictions (-1 = abstain), radii, counts and bounds (see `certify` for the
        guarantee, which holds for each image at level alpha).

        The noise of image j is the stream of `image_ids[j]`: pass the images' indices in
        their data set to reproduce `cear_tf.cli.certify`'s rows. Without ids each image's key
        is derived from its pixels (`content_id`), so no two different images share draws and
        the same image always gets the same ones.
        """
        check_positive(n0=n0, n=n, batch_size=batch_size)
        check_alpha(alpha)
        images, ids = self._checked_batch(images, image_ids)
        results = [self._certify(x, n0, n, alpha, batch_size, i) for x, i in zip(images, ids)]
        return {name: Certificates.stack([r[name] for r in results], ids)
                for name in self.names}

    def predict_batch(self, images: np.ndarray, n: int, alpha: float, batch_size: int = 1000,
                      image_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
        """PREDICT on every image of `images`: per aggregator an int array of classes (-1 =
        abstain); each answer differs from the smoothed classifier's with probability at most
        alpha. Image ids as for `certify_batch`."""
        check_positive(n=n, batch_size=batch_size)
        check_alpha(alpha)
        images, ids = self._checked_batch(images, image_ids)
        results = [self._predict(x, n, alpha, batch_size, i) for x, i in zip(images, ids)]
        return {name: np.array([r[name] for r in results], np.int64) for name in self.names}

    def certify_radius(self, x: np.ndarray, radius: float, n0: int, stages: Sequence[int],
                       alpha: float, batch_size: int, idx: int) -> dict[str, RadiusDecision]:
        """Adaptive sampling (Horvath et al. 2022): is G certified at `radius`?

        G is certified at r iff p_A > p_thr = Phi(r / sigma). After n0 selection draws pick
        c_A, estimation draws are added until the cumulative count reaches stages[0],
        stages[1], ...; at each stage the one-sided Clopper-Pearson bounds at level
        alpha / len(stages) on the cumulative counts decide (decisions.radius_decision). By
        the union bound over the stages, a certificate is wrong with probability at most
        alpha, as for CERTIFY. Easy images stop at the first stage, hence the savings.
        """
        check_positive(n0=n0, batch_size=batch_size)
        check_alpha(alpha)
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        stages = [int(n) for n in stages]
        if not stages or stages[0] < 1 or any(b <= a for a, b in zip(stages, stages[1:])):
            raise ValueError(f"stages must be increasing sample counts >= 1, got {stages}")
        level = alpha / len(stages)
        p_thr = radius_threshold(radius, self.sigma)
        x = self._checked(x, idx)
        selection = self.engine.sample_counts(x, n0, batch_size, idx, Phase.SELECT)
        c_a = {name: int(np.argmax(selection[name])) for name in self.names}
        counts = {name: 0 for name in self.names}
        decided: dict[str, RadiusDecision] = {}
        drawn = 0
        for j, total in enumerate(stages):
            # Stage j adds draws [drawn, total) of the estimation stream: the cumulative
            # sample is the first `total` draws, as a plain CERTIFY with N = total sees.
            new = self.engine.sample_counts(x, total - drawn, batch_size, idx, Phase.ESTIMATE,
                                            drawn)
            drawn = total
            for name in self.names:
                if name in decided:
                    continue
                counts[name] += int(new[name][c_a[name]])
                decision = radius_decision(c_a[name], counts[name], total, level, p_thr,
                                           self.sigma, j, last=j == len(stages) - 1)
                if decision is not None:
                    decided[name] = decision
            if len(decided) == len(self.names):
                break
        return decided

    def sample_counts(self, x: np.ndarray, num: int, batch_size: int, idx: int,
                      phase: Phase = Phase.ESTIMATE, first_draw: int = 0) -> dict[str, np.ndarray]:
        """Class counts [K] per aggregator over draws [first_draw, first_draw + num) of the
        `phase` stream of image `idx` (SamplingEngine.sample_counts), after the input check."""
        return self.engine.sample_counts(self._checked(x, idx), num, batch_size, idx, phase,
                                         first_draw)

    def noisy_member_probabilities(self, x: np.ndarray, num: int, batch_size: int,
                                   idx: int) -> np.ndarray:
        """[M, num, K] member softmax outputs on `num` smoothing draws of x (SWEEN fitting)."""
        return self.engine.noisy_member_probabilities(self._checked(x, idx), num, batch_size,
                                                      idx)

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
        return images, _image_ids(images, image_ids)


def _image_ids(images, image_ids) -> list[int]:
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
