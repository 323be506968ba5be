"""The typed configuration (cear_tf.config.specs) and the ensemble it loads: frozen, validated at
construction with the field named, and loaded into what every tool certifies, attacks and
exports."""

import dataclasses

import numpy as np
import pytest

from cear_tf.config.specs import EnsembleSpec, SamplingSpec
from cear_tf.ensemble import loading, members
from cear_tf.smoothing import core
from tests.helpers import constant_member


def test_specs_are_frozen_and_take_sequences_as_tuples():
    spec = EnsembleSpec(models=["a", "b"], aggregations=["mean", "gm"])
    assert spec.models == ("a", "b") and spec.aggregations == ("mean", "gm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.clip = True
    assert dataclasses.replace(spec, clip=True).clip
    assert spec.weights_file("rw") is None
    assert EnsembleSpec(models=["a"], rw_weights="w.json").weights_file("rw") == "w.json"
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplingSpec().n = 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(models=()), "models: no member"),
    (dict(models=("a",), aggregations=("mean", "median")), "aggregations: unknown median"),
    (dict(models=("a",), aggregations=("gm", "gm")), "repeat a name"),
    (dict(models=("a",), logit_noise=-0.1), "logit_noise must be >= 0"),
    (dict(models=("a",), precision="float8"), "precision must be one of"),
    (dict(models=("a",), gm_tolerance=0.0), "gm_tolerance must be > 0"),
    (dict(models=("a",), gm_max_iterations=0), "gm_max_iterations must be >= 1"),
])
def test_ensemble_spec_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnsembleSpec(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n0=0), "n0 must be >= 1"), (dict(n=0), "n must be >= 1"),
    (dict(batch_size=0), "batch_size must be >= 1"), (dict(alpha=1.0), r"alpha must be in \(0, 1\)"),
    (dict(alpha=0.0), r"alpha must be in \(0, 1\)"),
])
def test_sampling_spec_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingSpec(**kwargs)


def test_load_gives_members_aggregators_weights_and_fingerprint(tmp_path):
    ens = tmp_path / "ens"
    dirs = [constant_member(ens / f"member_{i}", cls) for i, cls in enumerate((3, 3, 5))]
    loading.save_weights(str(ens / "weights_rw.json"), "rw", dirs, [0.5, 0.3, 0.2], {})
    spec = EnsembleSpec(models=(str(ens),), aggregations=("mean", "rw", "gm_first2"))
    loaded = loading.load(spec)
    assert loaded.member_dirs == dirs and len(loaded.members) == 3
    assert [a.name for a in loaded.aggregators] == ["mean", "rw", "gm_first2"]
    assert list(loaded.aggregators[1].weights) == pytest.approx([0.5, 0.3, 0.2])
    assert loaded.fused is None and "LeNet-5" in loaded.why_not_fused
    fingerprint = loaded.fingerprint()
    assert fingerprint["members"] == [members.content_digest(d) for d in dirs]
    assert fingerprint["aggregator_weights"] == {"rw": pytest.approx([0.5, 0.3, 0.2])}
    # The loaded ensemble certifies as the tools do: two of three members vote 3.
    smooth = core.Smooth(loaded.members, 10, 0.25, loaded.aggregators)
    sampling = SamplingSpec(n0=20, n=200, alpha=0.01, batch_size=64)
    certs = smooth.certify(np.full((28, 28, 1), 0.5, np.float32), sampling.n0, sampling.n,
                           sampling.alpha, sampling.batch_size, idx=0)
    assert {name: c.prediction for name, c in certs.items()} == {"mean": 3, "rw": 3,
                                                                  "gm_first2": 3}
    with pytest.raises(ValueError, match="no sween weights"):
        loading.load(dataclasses.replace(spec, aggregations=("sween",)))
