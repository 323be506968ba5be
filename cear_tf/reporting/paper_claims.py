"""The paper's claims about MNIST (sections 5 and A.1), as checks on measured curves.

Each claim names the cells that decide it; `evaluate` reads our certified accuracy at those
cells and says whether the claim holds in our numbers. A claim holds when every inequality it
states holds in our measured cells (no tolerance: the cells are printed beside the verdict,
with the image count, so a reader can judge how close a call was).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

# ca(method, sigma, radius) -> certified accuracy in % (None when that log is missing).
Lookup = Callable[[str, float, float], "float | None"]

BASELINES = ("RandSmooth", "SWEEN")
ALL = ("RandSmooth", "SWEEN", "CEAR-(MV)", "CEAR-(RW)", "CEAR-(GM)", "CEAR(MV)", "CEAR(RW)",
       "CEAR(GM)")


@dataclasses.dataclass(frozen=True)
class Claim:
    where: str  # section of the paper
    text: str
    sigma: float
    leader: str  # the method claimed to be ahead
    rivals: tuple[str, ...]  # ... of these
    radii: tuple[float, ...]  # ... at these radii
    # Optional absolute levels: (method, radius, "<=" | ">=", percent).
    levels: tuple[tuple[str, float, str, float], ...] = ()


MNIST_CLAIMS = (
    Claim("5, Table 4", "sigma 0.25: CEAR-(GM) has the highest certified accuracy at small "
          "radii (99/98/96% at R = 0/0.25/0.5), above RandSmooth and SWEEN",
          0.25, "CEAR-(GM)", ALL, (0.0, 0.25, 0.5)),
    Claim("5, Table 4", "sigma 0.5: CEAR-(GM) remains best through R = 1.25 (85% at R = 1.0 "
          "vs 77% RandSmooth, 84% SWEEN)", 0.5, "CEAR-(GM)", ALL, (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)),
    Claim("5", "sigma 0.5: CEAR(RW) attains 58% at R = 1.5, above both baselines",
          0.5, "CEAR(RW)", BASELINES, (1.5,)),
    Claim("5, Table 4", "sigma 1.0: CEAR(RW) dominates (87/76/60/20% at R = 0.25/0.5/1/2), "
          "above every other method", 1.0, "CEAR(RW)", ALL, (0.25, 0.5, 1.0, 2.0)),
    Claim("5, Figure 2(c)", "sigma 1.0, R = 2.5: RandSmooth and SWEEN fall to near zero (<= 5%) "
          "while CEAR(RW) keeps certifying (read here as >= 10%)", 1.0, "CEAR(RW)", BASELINES,
          (2.5,), (("RandSmooth", 2.5, "<=", 5.0), ("SWEEN", 2.5, "<=", 5.0),
                   ("CEAR(RW)", 2.5, ">=", 10.0))),
    Claim("A.1, Figure 3", "sigma 1.0: beyond R = 2 CEAR-(RW) approaches zero while CEAR(RW) "
          "keeps about 25% (VGA)", 1.0, "CEAR(RW)", ("CEAR-(RW)",), (2.25,),
          (("CEAR-(RW)", 2.25, "<=", 5.0), ("CEAR(RW)", 2.25, ">=", 20.0))),
)


def evaluate(claim: Claim, ca: Lookup) -> tuple[str, str]:
    """(verdict, deciding cells): verdict is 'reproduced', 'not reproduced' or 'not measured'."""
    cells, holds = [], True
    for r in claim.radii:
        lead = ca(claim.leader, claim.sigma, r)
        if lead is None:
            return "not measured", f"no {claim.leader} log at sigma {claim.sigma:g}"
        others = {m: ca(m, claim.sigma, r) for m in claim.rivals if m != claim.leader}
        others = {m: v for m, v in others.items() if v is not None}
        if not others:
            return "not measured", f"no rival log at sigma {claim.sigma:g}"
        best = max(others, key=others.get)
        holds &= lead >= others[best]
        cells.append(f"R={r:g}: {claim.leader} {lead:.1f} vs {best} {others[best]:.1f}")
    for method, r, op, level in claim.levels:
        value = ca(method, claim.sigma, r)
        if value is None:
            return "not measured", f"no {method} log at sigma {claim.sigma:g}"
        holds &= value <= level if op == "<=" else value >= level
        cells.append(f"{method} at R={r:g}: {value:.1f} ({op} {level:g} claimed)")
    return ("reproduced" if holds else "not reproduced"), "; ".join(cells)
