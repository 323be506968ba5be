"""Cells of the report's tables: whole-point percentages, paired changes, the method order
of the paper's tables, and the two-standard-error test that marks a cell differing from
the paper's.
"""

from __future__ import annotations

import math

from cear_tf.reporting import certified_accuracy, paper_tables


def method_order(method: str) -> int:
    return (paper_tables.METHODS.index(method) if method in paper_tables.METHODS
            else len(paper_tables.METHODS))


def percent(v: float) -> str:
    """A certified-accuracy cell in whole points (the paper's style), halves rounded up:
    f"{v:.0f}" rounds half to even, which would print 200 images' 58.5 as 58 but 61.5 as 62.
    The epsilon absorbs 100 * k / n landing a hair below the half (117 / 200 -> 58.4999...)."""
    return str(math.floor(v + 0.5 + 1e-9))


def points(v: float) -> str:
    """An ablation cell to one decimal: its changes are paired differences of a few points
    on 200 images (half points), which whole points would hide or inflate."""
    return f"{v:.1f}"


def signed_points(d: float) -> str:
    """A paired change in points, to one decimal, with its sign."""
    return f"{d:+.1f}"


def signed_acr(d: float) -> str:
    """A paired change in ACR, with its sign."""
    return f"{d:+.3f}"


def _standard_error(p_percent: float, n: int) -> float:
    """Binomial standard error (points) of a proportion from n images, floored at the
    p = 1/(2n) level so that 0% and 100% cells still carry an error."""
    p = min(max(p_percent / 100, 0.0), 1.0)
    return 100 * math.sqrt(max(p * (1 - p), 0.25 / n) / n)


def differs(ours: float, n_ours: int, paper: float, n_paper: int) -> bool:
    """True when |ours - paper| exceeds two standard errors of *both* samples."""
    gap = abs(ours - paper)
    return gap > 2 * _standard_error(ours, n_ours) and gap > 2 * _standard_error(paper, n_paper)


def row_cells(log, radii, ref):
    n = len(log["correct"])
    ours = 100 * certified_accuracy.certified_accuracy(log["correct"], log["radius"], radii)
    cells = []
    for i, v in enumerate(ours):
        mark = "*" if ref is not None and differs(v, n, ref[i], paper_tables.PAPER_IMAGE_COUNT) else ""
        cells.append(f"{percent(v)}{mark}")
    return n, cells, certified_accuracy.average_certified_radius(log["correct"], log["radius"])
