"""Typed, frozen configuration of the library: what a smoothed ensemble is (EnsembleSpec) and
how it is sampled (SamplingSpec). The training spec is training.recipe.MemberConfig. Entry points
build these from their flags; library code takes them and never reads flags. Invalid values
are refused when a spec is made, with the field named.
"""

from __future__ import annotations

import dataclasses

from cear_tf.config import choices


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
    """The smoothed ensemble: its members, what each sees, and how their votes combine.

    models: ensemble folders (holding member_<i>/) or member SavedModel folders.
    aggregations: names from choices.AGGREGATIONS or <agg>_first<k>; empty for tools that
      use the members without an aggregation (the weight fits).
    rw_weights, sween_weights: weights files of rw and sween (default: weights_<agg>.json
      beside the members, as cear_tf.cli.weights writes them).
    logit_noise: eps_l, each member's own input noise on top of the smoothing noise.
    clip: clip each member's input to [0, 1].
    freeze: bake member weights into the graph (faster; same logits).
    fuse: run LeNet-5 members as one fused network where possible (same counts up to float
      rounding).
    precision: member inference precision (choices.PRECISIONS); the graph rewrite it turns on
      is process-wide in TensorFlow.
    gm_tolerance, gm_max_iterations: the geometric median's Weiszfeld iteration.
    """

    models: tuple[str, ...]
    aggregations: tuple[str, ...] = ("mean",)
    rw_weights: str | None = None
    sween_weights: str | None = None
    logit_noise: float = 0.0
    clip: bool = False
    freeze: bool = True
    fuse: bool = True
    precision: str = "float32"
    gm_tolerance: float = 1e-6
    gm_max_iterations: int = 100

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        if not self.models:
            raise ValueError("EnsembleSpec.models: no member given")
        bad = [a for a in self.aggregations if not choices.parse_aggregation(a)]
        if bad:
            raise ValueError(f"EnsembleSpec.aggregations: unknown {', '.join(bad)} (known: "
                             f"{', '.join(choices.AGGREGATIONS)}, <agg>_first<k>)")
        if len(set(self.aggregations)) != len(self.aggregations):
            raise ValueError(f"EnsembleSpec.aggregations repeat a name: {self.aggregations}")
        if self.logit_noise < 0:
            raise ValueError(f"EnsembleSpec.logit_noise must be >= 0, got {self.logit_noise}")
        if self.precision not in choices.PRECISIONS:
            raise ValueError(f"EnsembleSpec.precision must be one of "
                             f"{', '.join(choices.PRECISIONS)}, got {self.precision!r}")
        if not self.gm_tolerance > 0:
            raise ValueError(f"EnsembleSpec.gm_tolerance must be > 0, got {self.gm_tolerance}")
        if self.gm_max_iterations < 1:
            raise ValueError(f"EnsembleSpec.gm_max_iterations must be >= 1, got "
                             f"{self.gm_max_iterations}")

    def weights_file(self, aggregation: str) -> str | None:
        """The weights file given for rw or sween (None: the default beside the members)."""
        return {"rw": self.rw_weights, "sween": self.sween_weights}.get(aggregation)


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """Monte Carlo sampling of one certificate: n0 selection draws, n estimation draws, the
    failure probability alpha, and batch_size draws per forward pass (speed only: an
    image's draws do not depend on it)."""

    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000

    def __post_init__(self):
        for name in ("n0", "n", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SamplingSpec.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"SamplingSpec.alpha must be in (0, 1), got {self.alpha}")
