"""Loading an ensemble of member SavedModels and its aggregation weights."""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import tensorflow as tf

from cear_tf.data import datasets
from cear_tf.ensemble import members as members_lib
from cear_tf.ensemble import precision
from cear_tf.ensemble.files import (  # noqa: F401
    WEIGHTS_FILE,
    default_weights_path,
    load_weights,
    resolve_member_dirs,
    save_weights,
)
from cear_tf.models.fused import FusedLeNet5, lenet_weights_from_saved_model
from cear_tf.smoothing import aggregate


def load_ensemble(dirs: Sequence[str], frozen: bool = True) -> list[members_lib.Member]:
    """Loads members (frozen: see members.load_member) and checks they agree on input shape
    and class count."""
    loaded = [members_lib.load_member(d, frozen) for d in dirs]
    first = loaded[0]
    for m in loaded[1:]:
        if m.input_shape != first.input_shape:
            raise ValueError(f"members disagree on input shape: {first.path} takes "
                             f"{first.input_shape}, {m.path} takes {m.input_shape}")
        if m.num_classes != first.num_classes:
            raise ValueError(f"members disagree on class count: {first.path} has "
                             f"{first.num_classes}, {m.path} has {m.num_classes}")
    return loaded


FUSABLE_ARCHS = ("lenet5",)


class FusedMembers:
    """The members of an ensemble run as one fused network (models.fused), frozen:
    `shared(images [B, H, W, C])` gives every member the same input and returns logits
    [M, B, K] (the engine uses it when the members' inputs are the same: no logit noise);
    `grouped(images [B, H, W, M * C])` gives member i channels i*C..(i+1)*C-1 (their own
    noisy inputs; the attacks use it, frozen at first use)."""

    def __init__(self, network):
        self.num_members = network.num_members
        self._network = network
        h, w, c = network.image_shape
        self.shared = members_lib.freeze_fn(network, (None, h, w, c))

    @functools.cached_property
    def grouped(self):
        h, w, c = self._network.image_shape
        return members_lib.freeze_fn(self._network, (None, h, w, self.num_members * c))


def fuse(loaded: Sequence[members_lib.Member]) -> tuple[FusedMembers | None, str]:
    """(FusedMembers, "") when every member is a cear_tf LeNet-5 of one data set, else
    (None, why not). The fused logits are checked against the members' own on a random batch
    before they are used."""
    if len(loaded) < 2:
        return None, "a single member"
    metas = [m.metadata for m in loaded]
    if any(meta.get("arch") not in FUSABLE_ARCHS for meta in metas):
        return None, "not all members are cear_tf LeNet-5 (cear.json arch)"
    keys = {(meta.get("dataset"), bool(meta.get("normalize", True))) for meta in metas}
    if len(keys) != 1:
        return None, "members differ in data set or normalisation"
    dataset, normalize = keys.pop()
    info = datasets.dataset_info(dataset)
    if tuple(loaded[0].input_shape) != tuple(info.image_shape):
        return None, "input shape differs from the data set's"
    network = FusedLeNet5(len(loaded), info.image_shape, loaded[0].num_classes,
                          (info.mean, info.std) if normalize else None)
    try:
        network.set_member_weights([lenet_weights_from_saved_model(m.saved_model)
                                    for m in loaded])
    except (KeyError, AttributeError, ValueError) as e:
        return None, f"weights not readable by name ({e})"
    fused = FusedMembers(network)
    probe = np.random.default_rng(0).uniform(size=(8, *info.image_shape)).astype(np.float32)
    got = fused.shared(tf.constant(probe)).numpy()
    want = np.stack([m(tf.constant(probe)).numpy() for m in loaded])
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
        return None, f"fused logits differ from the members' (max {np.abs(got - want).max():.2e})"
    return fused, ""


class Ensemble:
    """An EnsembleSpec loaded: member folders, members, aggregators (weights read) and the
    fused network (None when not fused). `load(spec)` makes one."""

    def __init__(self, spec, member_dirs, members, aggregators, fused, why_not_fused):
        self.spec = spec
        self.member_dirs = list(member_dirs)
        self.members = list(members)
        self.aggregators = list(aggregators)
        self.fused = fused
        self.why_not_fused = why_not_fused

    def fingerprint(self) -> dict:
        """What defines the base classifier beyond the settings: a content digest of each
        member and the weights of the weighted aggregators (recorded in certify logs)."""
        record = {"members": [members_lib.content_digest(d) for d in self.member_dirs]}
        weights = {a.name: list(a.weights) for a in self.aggregators if a.weights is not None}
        if weights:
            record["aggregator_weights"] = weights
        return record


def load(spec) -> Ensemble:
    """Loads the ensemble a specs.EnsembleSpec describes. Sets the inference precision for
    the graphs traced from now on (process-wide in TensorFlow) before loading the members."""
    member_dirs = resolve_member_dirs(spec.models)
    precision.set_inference_precision(spec.precision)
    loaded = load_ensemble(member_dirs, spec.freeze)
    aggregators = []
    for name in spec.aggregations:
        weights = None
        if name in aggregate.WEIGHTED:
            path = spec.weights_file(name) or default_weights_path(member_dirs, name)
            weights = load_weights(path, name, member_dirs)
        aggregators.append(aggregate.make_aggregator(name, len(member_dirs), weights,
                                                     spec.gm_tolerance, spec.gm_max_iterations))
    fused, why = fuse(loaded) if spec.fuse else (None, "not asked")
    return Ensemble(spec, member_dirs, loaded, aggregators, fused, why)
