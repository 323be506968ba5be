"""The decisions of randomized smoothing, from class counts to answers (Cohen et al. 2019).

Plain functions of counts, no TensorFlow: `cear_tf.smoothing.engine` turns member passes
into counts, `cear_tf.smoothing.core.Smooth` asks these functions what the counts decide.

Guarantees, for a base classifier F and its smoothed classifier
G(x) = argmax_c P(F(x + eps) = c), eps ~ N(0, sigma^2 I), each trial one fresh draw:
  certify_decision  returns c_A with radius R = sigma * PhiInv(p_lower) only if the one-sided
                    (1 - alpha) Clopper-Pearson bound p_lower of n_A in n exceeds 1/2; then,
                    with probability >= 1 - alpha over the estimation draws, G(x + delta) = c_A
                    for every ||delta||_2 < R (Cohen et al., Theorem 1).
  predict_decision  returns the top class only if a two-sided binomial test of the top two
                    counts rejects equality at level alpha: the answer differs from G(x) with
                    probability at most alpha.
  radius_decision   one stage of adaptive sampling (Horvath et al. 2022) at level
                    alpha / stages: over all stages (union bound) a certificate at the target
                    radius is wrong with probability at most alpha.
  pooled_decision   NOT A CERTIFICATE: the released code's counting of the M members' own
                    votes as N * M independent trials (docs/deviations.md C1). The votes of
                    one draw are dependent, so its bound and radius are guaranteed nothing;
                    the cap on its radius rises from sigma * PhiInv(alpha^(1/N)) to
                    sigma * PhiInv((alpha/2)^(1/(N M))).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Sequence

import numpy as np
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import proportion_confint

ABSTAIN = -1
# The released code's confidence level for pooled votes: beta.ppf(alpha / 2, ...), the lower
# end of a two-sided (1 - alpha) Clopper-Pearson interval, i.e. one-sided level alpha / 2.
POOLED_LEVEL = "two-sided Clopper-Pearson (1 - alpha), i.e. one-sided alpha/2, as Certify/core.py"


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


@dataclasses.dataclass(frozen=True)
class RadiusDecision:
    prediction: int  # c_A when a radius > 0 was certified, else ABSTAIN
    certified: bool  # certified at the target radius
    radius: float  # the radius certified at the deciding stage (may be below the target)
    samples: int  # estimation draws used
    stage: int  # index of the deciding stage


def content_id(image: np.ndarray) -> int:
    """A 62-bit id derived from an image's float32 pixels (SHA-256): the default noise stream
    of an image certified without an explicit id. Different images get different streams (up
    to a 2^-62 collision), the same image always the same."""
    pixels = np.ascontiguousarray(np.asarray(image, np.float32))
    digest = hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p from n_a successes in n."""
    if n_a <= 0:
        return 0.0
    return float(proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0])


def upper_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on p from n_a successes in n."""
    if n_a >= n:
        return 1.0
    return float(proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[1])


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


def predict_decision(counts: np.ndarray, alpha: float) -> int:
    """PREDICT's decision (Cohen et al.): the top class if a two-sided binomial test of the
    top two counts rejects equality at level alpha, else ABSTAIN. The returned class differs
    from the smoothed classifier's with probability at most alpha."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    n_a, n_b = int(counts[order[0]]), int(counts[order[1]])
    return int(order[0]) if binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha else ABSTAIN


def radius_threshold(radius: float, sigma: float) -> float:
    """p_thr = Phi(r / sigma): G is certified at r iff p_A > p_thr."""
    return float(norm.cdf(radius / sigma))


def radius_decision(c_a: int, count: int, total: int, level: float, p_thr: float,
                    sigma: float, stage: int, last: bool) -> RadiusDecision | None:
    """One stage of adaptive sampling (Horvath et al. 2022), from `count` votes for c_A in
    the first `total` estimation draws: the one-sided Clopper-Pearson bounds at `level`
    (alpha / number of stages) decide. Lower bound > p_thr certifies; upper bound < p_thr
    abstains early; the last stage decides either way; else None (draw more)."""
    low = lower_confidence_bound(count, total, level)
    if low > p_thr and low > 0.5:
        return RadiusDecision(c_a, True, certified_radius(low, sigma), total, stage)
    if last or upper_confidence_bound(count, total, level) < p_thr:
        certified = low > 0.5
        return RadiusDecision(c_a if certified else ABSTAIN, False,
                              certified_radius(low, sigma) if certified else 0.0, total, stage)
    return None


def check_sample_size(n: int, alpha: float) -> None:
    """Refuses an N with which no image can be certified: even N votes of N give the lower
    bound alpha^(1/N), which exceeds 1/2 only for N > log2(1/alpha)."""
    n = int(n)
    if alpha ** (1.0 / n) <= 0.5:
        need = int(math.floor(math.log2(1.0 / alpha))) + 1
        raise ValueError(f"--N={n} cannot certify any image at --alpha={alpha:g}: even {n} "
                         f"votes of {n} give a lower bound of {alpha ** (1.0 / n):.3f} <= 0.5; "
                         f"use --N >= {need}")


def check_positive(**values) -> None:
    for name, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
