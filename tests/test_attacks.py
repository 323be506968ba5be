import keras
import numpy as np
import pytest
import tensorflow as tf

from cear_tf import models
from cear_tf.attacks import evaluation, white_box
from cear_tf.cli import attack
from cear_tf.ensemble.deployed import DeployedEnsemble
from cear_tf.smoothing import aggregate
from tests.helpers import parse_flags


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet-5 trained briefly: on real MNIST if present, else on learnable synthetic data."""
    from cear_tf.data import datasets
    from tests.conftest import SHARED_DATASETS
    keras.utils.set_random_seed(0)
    if (SHARED_DATASETS / "mnist").exists():
        x, y = datasets.load_split("mnist", "train", str(SHARED_DATASETS), validation_size=0)
        x, y = x[:8000], y[:8000]
        xt, yt = datasets.load_split("mnist", "test", str(SHARED_DATASETS))
        xt, yt = xt[:64], yt[:64]
    else:
        from tests.helpers import tiny_splits
        s = tiny_splits(n_train=2000, n_val=0, n_test=64)
        (x, y), (xt, yt) = s.train, s.test
    net = models.build_model("lenet5", (28, 28, 1), 10)
    net.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit(x, y, batch_size=128, epochs=1, verbose=0)
    return net, xt, yt.astype(np.int32)


def _acc(net, x, y):
    return float((net(x).numpy().argmax(1) == y).mean())


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 1.0)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_agrees_with_art(trained, norm, eps, loss):
    art = pytest.importorskip("art.attacks.evasion")
    from art.estimators.classification import TensorFlowV2Classifier
    net, x, y = trained
    clf = TensorFlowV2Classifier(
        model=net, nb_classes=10, input_shape=(28, 28, 1), clip_values=(0, 1),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ref = art.AutoProjectedGradientDescent(
        clf, norm=np.inf if norm == "inf" else 2, eps=eps, eps_step=2 * eps, max_iter=30,
        nb_random_init=1, batch_size=64, verbose=False,
        loss_type={"ce": "cross_entropy", "dlr": "difference_logits_ratio"}[loss])
    theirs = _acc(net, ref.generate(x=x, y=y), y)
    adv = white_box.apgd(lambda z: net(z), x, y, eps, norm, loss, n_iter=30)
    ours = _acc(net, adv.numpy(), y)
    assert abs(ours - theirs) <= 0.08, (ours, theirs)  # 64 images: a few points
    assert ours < _acc(net, x, y)  # the attack does something


def test_attacks_respect_budget_and_box(trained):
    net, x, y = trained
    for norm, eps in (("inf", 0.05), ("2", 0.5)):
        for loss in ("ce", "dlr"):
            adv = white_box.apgd(lambda z: net(z), x, y, eps, norm, loss, n_iter=10,
                               n_restarts=2).numpy()
            assert adv.min() >= 0 and adv.max() <= 1
            assert white_box.lp_norm(adv - x, norm).numpy().max() <= eps * (1 + 1e-6)


def _min_eps_by_bisection(net, x, y, norm, hi, steps=6):
    """Baseline: the smallest budget at which APGD-CE succeeds, per image (bisection)."""
    lo_b, hi_b = np.zeros(len(y)), np.full(len(y), hi)
    for _ in range(steps):
        mid = (lo_b + hi_b) / 2
        found = np.zeros(len(y), bool)
        for e in np.unique(mid):
            sel = mid == e
            adv = white_box.apgd(lambda z: net(z), x[sel], y[sel], float(e), norm, "ce", n_iter=15)
            found[sel] = net(adv).numpy().argmax(1) != y[sel]
        hi_b = np.where(found, mid, hi_b)
        lo_b = np.where(found, lo_b, mid)
    return hi_b


@pytest.mark.parametrize("norm,hi", [("inf", 0.4), ("2", 4.0)])
def test_fab_finds_small_verified_adversarials(trained, norm, hi):
    net, x, y = trained
    x, y = x[:16], y[:16]
    adv, norms = white_box.fab(lambda z: net(z), x, y, norm, n_iter=30, n_restarts=1)
    adv, norms = adv.numpy(), norms.numpy()
    clean_correct = net(x).numpy().argmax(1) == y
    assert (norms[~clean_correct] == 0).all()  # already wrong: norm 0
    found = np.isfinite(norms) & clean_correct
    assert found.sum() >= 0.9 * clean_correct.sum()
    pred = net(adv).numpy().argmax(1)
    assert (pred[found] != y[found]).all()  # every returned adversarial changes the prediction
    np.testing.assert_allclose(white_box.lp_norm(adv - x, norm).numpy()[found], norms[found],
                               rtol=1e-5)
    assert adv.min() >= 0 and adv.max() <= 1
    baseline = _min_eps_by_bisection(net, x, y, norm, hi)
    # Minimum-norm FAB should not be worse than a bisection over PGD budgets on most points.
    assert np.mean(norms[found] <= baseline[found] * 1.1 + 1e-6) >= 0.7


def test_eot_averages_losses_and_gradients():
    calls = tf.Variable(0.0)
    w = tf.constant(np.linspace(-1, 1, 4).reshape(1, 2, 2, 1), tf.float32)

    def target(x):  # scores depend on a counter, like a randomised model on each query
        calls.assign_add(1.0)
        s = calls * tf.reduce_sum(x * w, axis=[1, 2, 3])
        return tf.stack([tf.zeros_like(s), s], axis=1)

    x = tf.fill([1, 2, 2, 1], 0.5)
    _, _, scores = white_box.loss_and_gradient(target, x, tf.constant([0]), "ce", eot=4)
    # Draws 1..4: the averaged score is mean(1..4) * w.x = 2.5 * 0.
    np.testing.assert_allclose(scores.numpy()[0, 1], 2.5 * float(tf.reduce_sum(x * w)))
    _, grad, _ = white_box.loss_and_gradient(
        lambda z: tf.stack([tf.zeros([1]), tf.reduce_sum(z * w, axis=[1, 2, 3])], axis=1),
        x, tf.constant([0]), "ce", eot=3)
    # d CE / d x for class 0 with scores [0, s]: sigmoid(s) * w, here s = 0.
    np.testing.assert_allclose(grad.numpy(), 0.5 * w.numpy(), atol=1e-6)


def test_checkpoints_follow_the_paper():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1).
    assert white_box.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("kwargs,match", [
    (dict(norm="1", eps=0.1), "unknown norm"), (dict(norm="inf", eps=0.0), "eps"),
    (dict(norm="inf", eps=0.1, images=np.full((1, 2), 2.0)), r"\[0, 1\]"),
])
def test_bad_attack_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        white_box.check_attack_arguments(**kwargs)


def test_attack_cli_on_an_unbreakable_ensemble(tmp_path):
    from tests import data_fakes as fakes
    from tests.test_certify_cli import constant_member
    data_dir = tmp_path / "mnist"
    fakes.write_mnist(data_dir, n_train=20, n_test=10)
    fakes.write_idx(data_dir / "t10k-labels-idx1-ubyte", np.full(10, 3, np.uint8))
    dirs = [constant_member(tmp_path / f"m{i}", 3, strength=20.0) for i in range(2)]
    out = tmp_path / "att.tsv"
    parse_flags([f"--data_dir={data_dir}", f"--models={','.join(dirs)}", "--aggregation=mean",
                 "--logit_noise=0.1", "--norm=2", "--eps=0.5", "--attacks=apgd-ce,fab",
                 "--num_images=6", "--num_iterations=5", f"--outfile={out}"], attack)
    attack.main(["prog"])
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == list(evaluation.COLUMNS)
    body = {(r[0], r[1]): r for r in rows[1:]}
    assert set(body) >= {("member:0", "apgd-ce"), ("member:1", "fab"), ("mean", "all")}
    for r in rows[1:]:
        assert float(r[6]) == 1.0 and float(r[7]) == 1.0 and float(r[8]) == 0.0
    out2 = tmp_path / "att_ensemble.tsv"
    parse_flags([f"--data_dir={data_dir}", f"--models={','.join(dirs)}", "--aggregation=gm",
                 "--logit_noise=0.1", "--norm=inf", "--eps=0.1", "--attacks=apgd-ce,apgd-dlr",
                 "--source=ensemble", "--eot=2", "--num_images=6", "--num_iterations=5",
                 f"--outfile={out2}"], attack)
    attack.main(["prog"])
    rows = [line.split("\t") for line in out2.read_text().splitlines()[1:]]
    assert [r[1] for r in rows] == ["apgd-ce", "apgd-dlr", "apgd-ce/log-space",
                                    "apgd-dlr/log-space", "apgd-ce/mean-surrogate",
                                    "apgd-dlr/mean-surrogate", "all"]
    assert all(r[0] == "ensemble" and float(r[8]) == 0.0 for r in rows)
    with pytest.raises(ValueError, match="member:i"):
        evaluation.parse_source("member:5", 2)
    from absl import flags
    with pytest.raises(flags.IllegalFlagValueError):
        parse_flags(["--attacks=cw"], attack)


def _saturated_members(scale=100.0, m=3):
    """Linear members on [2, 2, 1] images: class 1 iff mean pixel > 0.5, logits x scale
    (margins of ~tens at the test points, like distilled students evaluated at T = 1)."""
    def member(i):
        def logits(x):
            s = scale * (tf.reduce_mean(x, axis=[1, 2, 3]) - 0.5 + 0.01 * i)
            return tf.stack([-s, s], axis=1)
        return logits
    return [member(i) for i in range(m)]


@pytest.mark.parametrize("name", ["mean", "rw", "gm", "mv", "single", "sween"])
def test_log_space_aggregation_matches_and_keeps_gradients(name):
    from cear_tf.smoothing import aggregate
    m = 3
    agg = aggregate.make_aggregator(name, m, weights=[0.5, 0.3, 0.2]
                                    if name in aggregate.WEIGHTED else None)
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(m, 5, 4)), tf.float32)
    log_probs = tf.nn.log_softmax(logits)
    reference = "mean" if name == "mv" else name  # mv's surrogate is the mean
    ref = aggregate.make_aggregator(reference, m, weights=[0.5, 0.3, 0.2]
                                    if name in aggregate.WEIGHTED else None)
    np.testing.assert_allclose(agg.log_scores(log_probs).numpy(),
                               np.log(ref(tf.nn.softmax(logits)).numpy()), atol=2e-4)
    # Saturated members: softmax is exactly one-hot, log-space gradients are not zero.
    x = tf.fill([1, 2, 2, 1], 0.7)  # member margins ~40: p of the other class < 1e-12
    members = _saturated_members()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        lp = tf.stack([tf.nn.log_softmax(f(x)) for f in members])
        naive = tf.math.log(tf.maximum(agg(tf.exp(lp)), 1e-12))
        stable = agg.log_scores(lp)
        losses = [white_box.cross_entropy(s, tf.constant([1])) for s in (naive, stable)]
    naive_grad = tape.gradient(losses[0], x)  # None for mv: votes are not differentiable
    assert naive_grad is None or float(tf.reduce_max(tf.abs(naive_grad))) == 0.0
    assert float(tf.reduce_max(tf.abs(tape.gradient(losses[1], x)))) > 0.0


def test_ensemble_attack_breaks_saturated_members():
    """The whole-ensemble APGD on the log-space form finds the adversarials that exist (the
    boundary is 0.2 away in L-inf) although every member's softmax is saturated."""
    from cear_tf.smoothing import aggregate
    members = _saturated_members()
    model = evaluation.AttackTarget(DeployedEnsemble(members), aggregate.make_aggregator("gm", 3))
    x = tf.fill([8, 2, 2, 1], 0.65)
    y = tf.ones([8], tf.int32)
    assert (model.predict(x) == 1).all()
    adv = white_box.apgd(model.ensemble_log_space_scores, x, y, 0.2, "inf", "ce", n_iter=20)
    assert (model.predict(adv) == 0).all()
    assert float(tf.reduce_max(tf.abs(adv - x))) <= 0.2 + 1e-6
    # The direct form log(max(A(p), 1e-12)) has no gradient at the start: why both run.
    masked = white_box.apgd(model.ensemble_scores, x, y, 0.2, "inf", "ce", n_iter=20)
    assert (model.predict(masked) == 0).mean() < 1


def test_geometric_median_gradient_is_finite_on_a_member_point():
    """Members whose float32 softmax is exactly the same one-hot vector: the median starts
    on their common point, where the distance has no derivative; the gradient must stay
    finite, NaN would poison the attack."""
    from cear_tf.smoothing import aggregate
    agg = aggregate.make_aggregator("gm", 3)
    logits = tf.Variable(np.array([[[60.0, 0.0, -1.0]], [[70.0, 2.0, 0.0]], [[80.0, 0.0, 1.0]]],
                                  np.float32))
    with tf.GradientTape(persistent=True) as tape:
        log_probs = tf.nn.log_softmax(logits)
        stable = agg.log_scores(log_probs)
        plain = tf.math.log(agg(tf.exp(log_probs)))
        losses = [white_box.cross_entropy(s, tf.constant([0])) for s in (stable, plain)]
    for loss in losses:
        assert np.all(np.isfinite(tape.gradient(loss, logits).numpy()))
    assert np.abs(tape.gradient(losses[0], logits).numpy()).max() > 0


def _linear_members(k=3, shape=(6, 6, 1), seeds=(0, 1)):
    out = []
    for seed in seeds:
        w = np.random.default_rng(seed).normal(size=(int(np.prod(shape)), k)).astype(np.float32)
        out.append(lambda x, w=w: tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w))
    return out


def test_attacked_ensemble_is_the_certified_one():
    """The attack queries the certify engine's own DeployedEnsemble: the same member noise
    streams (a query's key, an ATTACK-domain stream), the same clipping, fresh noise per
    query."""
    from cear_tf.smoothing.core import Smooth
    from cear_tf.smoothing.noise import NoiseDomain, Phase, stream_key
    members = _linear_members()
    mean = aggregate.make_aggregator("mean", 2)
    smooth = Smooth(members, 3, 0.5, [mean], logit_noise=0.3, clip=True, seed=4)
    target = evaluation.AttackTarget(smooth.ensemble, mean, seed=4)
    x = tf.constant(np.random.default_rng(2).uniform(size=(5, 6, 6, 1)).astype(np.float32))
    first_query = tf.exp(target._member_log_probs(x)).numpy()
    key = stream_key(4, NoiseDomain.ATTACK, 1, Phase.PREDICT)
    engine, _ = smooth.engine.member_probabilities(x, key, 0)
    np.testing.assert_allclose(first_query, engine.numpy(), rtol=1e-5, atol=1e-6)
    second_query = tf.exp(target._member_log_probs(x)).numpy()
    assert np.abs(second_query - first_query).max() > 1e-3  # fresh noise per query
    # Clipping is part of the attacked classifier as of the certified one.
    outside = x * 3.0 - 1.0
    clipped = evaluation.AttackTarget(DeployedEnsemble(members, clip=True), mean)
    plain = evaluation.AttackTarget(DeployedEnsemble(members), mean)
    assert (clipped.predict(outside) == clipped.predict(tf.clip_by_value(outside, 0, 1))).all()
    def scores(model, v):
        return model.ensemble_scores(v).numpy()

    assert np.allclose(scores(clipped, outside), scores(clipped, tf.clip_by_value(outside, 0, 1)))
    assert not np.allclose(scores(plain, outside), scores(plain, tf.clip_by_value(outside, 0, 1)))
