"""Paired comparison of two certify logs on the images both certified: exact McNemar tests.

Two rows of a table certified on the same images (same noise keys, same image indices) are
compared image by image: at radius r each image is certified-correct by A, by B, by both or
by neither. Only the discordant images carry information about which row is ahead: b of
them are certified by A only, c by B only. Under the null hypothesis that A and B certify
at r equally often, b ~ Binomial(b + c, 1/2); the exact two-sided McNemar p-value is that
binomial test's (1.0 when b + c = 0). The test is conditional on the images and treats the
certificates as given (it does not model their own Monte Carlo error, which alpha bounds).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy.stats import binomtest


@dataclasses.dataclass(frozen=True)
class Paired:
    radius: float
    images: int  # images both logs certified
    a: int  # certified-correct at radius by A
    b: int  # certified-correct at radius by B
    a_only: int
    b_only: int
    p_value: float  # exact two-sided McNemar


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value of a_only vs b_only discordant pairs."""
    n = int(a_only) + int(b_only)
    if n == 0:
        return 1.0
    return float(binomtest(int(a_only), n, 0.5).pvalue)


def certified_at(log: dict, radius: float) -> dict[int, bool]:
    """{image index: certified-correct at radius} of a log read as {idx, correct, radius}."""
    hit = np.asarray(log["correct"], bool) & (np.asarray(log["radius"], float) >= radius)
    return dict(zip((int(i) for i in log["idx"]), hit.tolist()))


def compare(log_a: dict, log_b: dict, radii: Sequence[float],
            keep: set[int] | None = None) -> list[Paired]:
    """The paired comparison of A and B at each radius on the images both hold (and `keep`
    holds, when given)."""
    out = []
    for r in radii:
        a, b = certified_at(log_a, r), certified_at(log_b, r)
        common = sorted(set(a) & set(b) & (keep if keep is not None else set(a)))
        x = np.array([a[i] for i in common], bool)
        y = np.array([b[i] for i in common], bool)
        a_only, b_only = int(np.sum(x & ~y)), int(np.sum(~x & y))
        out.append(Paired(float(r), len(common), int(x.sum()), int(y.sum()), a_only, b_only,
                          mcnemar_p(a_only, b_only)))
    return out


def describe(p: Paired) -> str:
    """'A 54 vs B 48 of 67 (+7/-1, p = 0.07)'-style cell text, counts of images."""
    return (f"{p.a} vs {p.b} of {p.images} (+{p.a_only}/-{p.b_only}, "
            f"p = {p.p_value:.2g})")
