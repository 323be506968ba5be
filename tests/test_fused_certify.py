"""Certification with the members fused into one network (loading.fuse): the same
counts as running them one by one, up to a handful of draws flipped by float rounding."""

import numpy as np
import pytest

from cear_tf import models
from cear_tf.ensemble import loading, members
from cear_tf.smoothing import aggregate
from cear_tf.smoothing.core import Smooth


@pytest.fixture(scope="module")
def lenet_members(tmp_path_factory):
    import keras
    root = tmp_path_factory.mktemp("fusedcert")
    dirs = []
    for i in range(3):
        keras.utils.set_random_seed(20 + i)
        net = models.build_model("lenet5", (28, 28, 1), 10, ((0.1307,), (0.3081,)))
        d = str(root / f"member_{i}")
        members.export_member(net, d, {"arch": "lenet5", "dataset": "mnist", "normalize": True})
        dirs.append(d)
    return loading.load_ensemble(dirs)


# With logit noise the engine runs the members one by one (fused was slower there); the
# case checks that the fused object does not change what such an engine computes.
@pytest.mark.parametrize("logit_noise,clip", [(0.0, False), (0.3, False), (0.0, True)])
def test_fused_counts_match_unfused(lenet_members, logit_noise, clip):
    fused, why = loading.fuse(lenet_members)
    assert fused is not None, why
    aggs = [aggregate.make_aggregator(a, 3) for a in ("mean", "mv", "gm")]
    x = np.random.default_rng(2).uniform(size=(28, 28, 1)).astype(np.float32)
    kw = dict(logit_noise=logit_noise, clip=clip, seed=4)
    plain = Smooth(lenet_members, 10, 0.5, aggs, **kw)
    one = Smooth(lenet_members, 10, 0.5, aggs, fused=fused, **kw)
    a = plain.sample_counts(x, 2000, 500, idx=3)
    b = one.sample_counts(x, 2000, 500, idx=3)
    for name in a:
        assert np.abs(a[name] - b[name]).sum() <= 6, (name, a[name], b[name])
        assert a[name].sum() == b[name].sum() == 2000


def test_only_cear_lenet_members_fuse(lenet_members, tmp_path):
    import keras
    net = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    members.export_member(net, str(tmp_path / "foreign"), {})
    foreign = members.load_member(str(tmp_path / "foreign"))
    fused, why = loading.fuse([lenet_members[0], foreign])
    assert fused is None and "LeNet-5" in why
    assert loading.fuse(lenet_members[:1])[0] is None


def test_certify_cli_fused_and_not_give_the_same_rows(lenet_members, tmp_path):
    import os

    from cear_tf.cli import certify
    from cear_tf.reporting.log_files import read_rows
    from tests import data_fakes as fakes
    from tests.helpers import parse_flags
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=20, n_test=6)
    ens = os.path.dirname(lenet_members[0].path)
    rows = {}
    for flag in ("--fuse_members", "--nofuse_members"):
        out = str(tmp_path / f"{flag}.tsv")
        parse_flags([f"--data_dir={data_dir}", f"--models={ens}", "--sigma=0.25", "--N0=50",
                     "--N=500", "--batch=250", "--alpha=0.01", "--validation_size=0",
                     "--aggregation=mean", f"--outfile={out}", flag], certify)
        certify.main(["prog"])
        rows[flag] = read_rows(out)
    for a, b in zip(rows["--fuse_members"], rows["--nofuse_members"]):
        assert a["predict"] == b["predict"]
        assert abs(int(a["count"]) - int(b["count"])) <= 2


@pytest.mark.parametrize("logit_noise", [0.0, 0.3])
def test_fused_attack_scores_and_gradients_match_unfused(lenet_members, logit_noise):
    """The attacks query the fused network (grouped inputs with logit noise): the same
    scores, gradients and predictions as the members one by one, queries with the same keys,
    also from inside a tf.function (the grouped network is frozen at first use)."""
    import tensorflow as tf

    from cear_tf.attacks import evaluation
    from cear_tf.ensemble.deployed import DeployedEnsemble
    fused, why = loading.fuse(lenet_members)
    assert fused is not None, why
    x = tf.constant(np.random.default_rng(3).uniform(size=(6, 28, 28, 1)).astype(np.float32))
    gm = aggregate.make_aggregator("gm", 3)
    calls = []

    class Counted:  # the fused network, its passes counted
        num_members = fused.num_members
        shared = staticmethod(lambda images: calls.append("shared") or fused.shared(images))
        grouped = staticmethod(lambda images: calls.append("grouped") or fused.grouped(images))

    results = []
    for f in (None, Counted()):
        model = evaluation.AttackTarget(
            DeployedEnsemble(lenet_members, logit_noise, fused=f), gm, seed=5)

        @tf.function
        def scores_and_gradient(images):
            with tf.GradientTape() as tape:
                tape.watch(images)
                scores = model.ensemble_log_space_scores(images)  # noqa: B023
                picked = tf.reduce_sum(scores[:, 0])
            return scores, tape.gradient(picked, images)

        scores, gradient = scores_and_gradient(x)
        results.append((scores.numpy(), gradient.numpy(), model.predict(x)))
    assert calls and set(calls) == {"grouped" if logit_noise else "shared"}
    (s0, g0, p0), (s1, g1, p1) = results
    np.testing.assert_allclose(s1, s0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g1, g0, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(p1, p0)
    assert np.abs(g0).max() > 0
