"""Statistical tests of CERTIFY/PREDICT against classifiers with closed-form answers.

A linear binary classifier f(x) = [w.x + b > 0] smoothed with N(0, sigma^2 I) has
p_A = Phi(d / sigma), d = (w.x + b) / |w| the signed distance to the hyperplane, and its
exact certified radius is d (Cohen et al. 2019, section 3.1). All seeds are fixed.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import norm

from cear_tf.smoothing import aggregate
from cear_tf.smoothing.core import Smooth
from cear_tf.smoothing.decisions import ABSTAIN, lower_confidence_bound
from cear_tf.smoothing.engine import NonFiniteError
from cear_tf.smoothing.noise import NOISE_BLOCK, NoiseDomain, Phase, block_noise

SHAPE = (4, 4, 1)


def linear_member(distance, direction=0):
    """Logits [0, s * (w.x + b)] with unit w along one pixel; x0 = 0.5 is at `distance`."""
    w = np.zeros(np.prod(SHAPE), np.float32)
    w[direction] = 1.0
    b = distance - 0.5

    def member(images):
        flat = tf.reshape(images, [tf.shape(images)[0], -1])
        margin = tf.linalg.matvec(flat, tf.constant(w)) + b
        return tf.stack([tf.zeros_like(margin), 1e4 * margin], axis=1)

    return member


X0 = np.full(SHAPE, 0.5, np.float32)


def _smooth(distance, sigma, logit_noise=0.0, seed=0, aggregations=("single",), members=1):
    member = linear_member(distance)
    aggs = [aggregate.make_aggregator(a, members, weights=[1.0] * members
                                      if a in aggregate.WEIGHTED else None) for a in aggregations]
    return Smooth([member] * members, 2, sigma, aggs, logit_noise=logit_noise, seed=seed)


def test_radius_close_to_exact_at_100k():
    sigma, d = 0.5, 0.5
    c = _smooth(d, sigma).certify(X0, 100, 100_000, 0.001, 10_000, idx=0)["single"]
    assert c.prediction == 1
    assert c.radius <= d
    assert c.radius > 0.97 * d  # p_A = Phi(1) = 0.841: bound costs ~1.5% of the radius
    assert abs(c.count / c.num - norm.cdf(d / sigma)) < 0.005


def test_radius_with_logit_noise_matches_closed_form():
    sigma, eps, d = 0.5, 0.3, 0.5
    c = _smooth(d, sigma, logit_noise=eps).certify(X0, 100, 100_000, 0.001, 10_000, idx=0)["single"]
    # Total noise sqrt(sigma^2 + eps^2): p_A = Phi(d / sqrt(.)), radius = sigma * PhiInv(p_A).
    exact = sigma * d / np.sqrt(sigma**2 + eps**2)
    assert abs(c.count / c.num - norm.cdf(d / np.sqrt(sigma**2 + eps**2))) < 0.005
    assert c.radius <= exact and c.radius > 0.96 * exact


def test_radius_coverage_over_seeds():
    """P(certified radius > exact radius) <= alpha: 400 independent runs at alpha = 0.05."""
    sigma, d, alpha, runs = 0.5, 0.3, 0.05, 400
    exceed = 0
    smooth = _smooth(d, sigma, seed=1)
    for idx in range(runs):  # each image index has its own independent noise stream
        c = smooth.certify(X0, 20, 500, alpha, 500, idx=idx)["single"]
        exceed += c.prediction == 1 and c.radius > d
    # Binomial(400, 0.05) exceeds 33 with probability < 0.001; Clopper-Pearson is conservative.
    assert exceed <= 33, exceed


def test_clopper_pearson_lower_bound_coverage():
    rng = np.random.default_rng(0)
    for p, n, alpha in ((0.7, 200, 0.05), (0.95, 1000, 0.01), (0.5, 50, 0.1)):
        counts = rng.binomial(n, p, size=4000)
        bounds = np.array([lower_confidence_bound(int(k), n, alpha) for k in counts])
        miss = np.mean(bounds > p)
        assert miss <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / 4000), (p, n, alpha, miss)
        assert miss > alpha / 6  # not vacuous either: it is an exact-level bound


def test_bound_guards():
    assert lower_confidence_bound(0, 100, 0.001) == 0.0
    top = lower_confidence_bound(100, 100, 0.001)
    assert top == pytest.approx(0.001 ** (1 / 100))  # closed form of CP at n_A = N
    c = _smooth(5.0, 0.25).certify(X0, 10, 100, 0.001, 100, idx=0)["single"]  # p = 1 effectively
    assert c.count == 100 and np.isfinite(c.radius) and c.radius == pytest.approx(
        0.25 * norm.ppf(top))


def test_abstains_near_the_boundary():
    c = _smooth(0.0, 0.5).certify(X0, 100, 2000, 0.001, 1000, idx=0)["single"]
    assert c.prediction == ABSTAIN and c.radius == 0.0


def test_wrong_side_certifies_the_other_class():
    c = _smooth(-0.5, 0.5).certify(X0, 100, 10_000, 0.001, 5000, idx=0)["single"]
    assert c.prediction == 0 and c.radius < 0.5


def test_predict_is_a_valid_test():
    # On the boundary p_A = p_B: a committed answer is an error; rate must be <= alpha.
    smooth = _smooth(0.0, 0.5, seed=2)
    committed = sum(smooth.predict(X0, 200, 0.05, 200, idx=i)["single"] != ABSTAIN
                    for i in range(200))
    assert committed <= 19  # Binomial(200, 0.05) exceeds 19 with probability < 0.01
    assert _smooth(0.5, 0.5).predict(X0, 1000, 0.001, 1000, idx=0)["single"] == 1


def test_noise_is_reproducible_per_image_and_differs_between_images():
    s = _smooth(0.1, 0.5, seed=3)
    a = s.sample_counts(X0, 5000, 700, idx=11)["single"]
    c = s.sample_counts(X0, 5000, 700, idx=12)["single"]
    np.testing.assert_array_equal(a, s.sample_counts(X0, 5000, 700, idx=11)["single"])
    assert not np.array_equal(a, c)
    assert a.sum() == c.sum() == 5000


@pytest.mark.parametrize("logit_noise", [0.0, 0.3])
def test_counts_do_not_depend_on_the_batch_size(logit_noise):
    # At distance 0 every draw is a coin flip, so any change of a draw shows in the counts.
    s = _smooth(0.0, 0.5, logit_noise=logit_noise, seed=4, aggregations=("mean", "mv"), members=3)
    counts = [s.sample_counts(X0, 2345, batch, idx=7) for batch in (1000, 700, 64, 2345)]
    for other in counts[1:]:
        for name in ("mean", "mv"):
            np.testing.assert_array_equal(counts[0][name], other[name])
    assert counts[0]["mean"].sum() == 2345
    assert s.certify(X0, 100, 1500, 0.001, 1000, idx=3) == s.certify(X0, 100, 1500, 0.001, 300, idx=3)


def test_draws_are_the_same_values_however_batched():
    key = tf.constant([1, 2], tf.int64)
    shape = tf.constant([3, 2])
    whole = block_noise(key, 0, 450, shape).numpy()
    parts = np.concatenate([block_noise(key, f, n, shape).numpy()
                            for f, n in ((0, 37), (37, 163), (200, 100), (300, 150))])
    np.testing.assert_array_equal(whole, parts)
    assert whole.shape == (450, 3, 2)
    assert abs(whole.mean()) < 0.1 and abs(whole.std() - 1) < 0.05


def test_streams_of_images_phases_and_draws_never_share_keys():
    # The former scheme packed (idx * 3 + phase) * 2^20 + batch into one integer: batch 2^20 of
    # image 0's estimation stream was batch 0 of its prediction stream. Draw indices far past
    # 2^20 blocks must stay inside their own stream.
    s = _smooth(0.0, 0.5, seed=0)
    shape = tf.constant([4])
    far = (2**20) * NOISE_BLOCK
    a = block_noise(s.engine.stream_key(0, Phase.ESTIMATE), far, 5, shape).numpy()
    b = block_noise(s.engine.stream_key(0, Phase.PREDICT), 0, 5, shape).numpy()
    c = block_noise(s.engine.stream_key(1, Phase.SELECT), 0, 5, shape).numpy()
    d = block_noise(s.engine.stream_key(0, Phase.SELECT), 3 * far, 5, shape).numpy()
    e = block_noise(s.engine.stream_key(0, Phase.ESTIMATE), 2**40, 5, shape).numpy()
    values = [a, b, c, d, e]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not np.allclose(values[i], values[j]), (i, j)
    keys = {tuple(s.engine.stream_key(i, p).numpy()) for i in range(50) for p in Phase}
    assert len(keys) == 150


def test_each_noise_domain_draws_its_own_noise():
    member = linear_member(0.0)
    agg = [aggregate.make_aggregator("single", 1)]
    engines = {d: Smooth([member], 2, 0.5, agg, seed=5, noise_domain=d) for d in NoiseDomain}
    counts = {d: [int(e.sample_counts(X0, 400, 400, idx=i)["single"][1]) for i in range(6)]
              for d, e in engines.items()}
    # Six coin-flip counts of 400 draws agree by chance with probability ~ (1/25)^6.
    assert counts[NoiseDomain.CERTIFY] != counts[NoiseDomain.RW_WEIGHTS]
    assert counts[NoiseDomain.CERTIFY] != counts[NoiseDomain.SWEEN_WEIGHTS]
    assert counts[NoiseDomain.RW_WEIGHTS] != counts[NoiseDomain.SWEEN_WEIGHTS]
    again = Smooth([member], 2, 0.5, agg, seed=5, noise_domain=NoiseDomain.CERTIFY)
    assert [int(again.sample_counts(X0, 400, 400, idx=i)["single"][1]) for i in range(6)] == \
        counts[NoiseDomain.CERTIFY]


def test_weights_fit_in_their_own_domains(monkeypatch):
    from cear_tf.ensemble import fitting
    seen = []

    class Recording(Smooth):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(self.noise_domain)

    monkeypatch.setattr(fitting.core, "Smooth", Recording)
    labels = np.ones(3, np.int64)
    fitting.robust_weights([linear_member(0.5)] * 2, 2, np.stack([X0] * 3), labels, 0.5, 0.0,
                             50, 200, 0.01, 100)
    assert seen == [NoiseDomain.RW_WEIGHTS]


def test_adaptive_stages_see_the_first_draws_of_the_estimation_stream():
    # p_A = Phi(0.4) = 0.66 below p_thr = Phi(0.6) = 0.73, too close to stop early at this
    # alpha: the last stage decides from the first 3000 estimation draws, whatever the stage
    # and batch boundaries, so its radius is the one computed from those draws directly.
    from cear_tf.smoothing.decisions import certified_radius
    s = _smooth(0.2, 0.5, seed=6)
    decision = s.certify_radius(X0, 0.3, 100, [500, 1200, 3000], 1e-9, 700, idx=2)["single"]
    assert decision.samples == 3000 and decision.stage == 2 and not decision.certified
    plain = s.sample_counts(X0, 3000, 1000, idx=2, phase=Phase.ESTIMATE)["single"]
    assert decision.prediction == 1
    low = lower_confidence_bound(int(plain[1]), 3000, 1e-9 / 3)
    assert decision.radius == certified_radius(low, 0.5) > 0


def test_progress_is_reported_after_every_batch():
    s = _smooth(0.5, 0.5)
    calls = []
    s.progress = lambda drawn, asked: calls.append((drawn, asked))
    s.sample_counts(X0, 2500, 1000, idx=1)
    assert calls == [(1000, 2500), (2000, 2500), (2500, 2500)]


def test_identical_members_certify_like_one():
    agg_names = ("mean", "mv", "rw", "gm")
    single = _smooth(0.2, 0.5, seed=9)
    ensemble = _smooth(0.2, 0.5, seed=9, aggregations=agg_names, members=4)
    ref = single.certify(X0, 100, 3000, 0.001, 1000, idx=0)["single"]
    got = ensemble.certify(X0, 100, 3000, 0.001, 1000, idx=0)
    for name in agg_names:
        assert got[name] == ref, name


def test_nonfinite_member_output_is_an_error():
    def bad(images):
        return tf.fill([tf.shape(images)[0], 2], np.nan)

    s = Smooth([linear_member(0.2), bad], 2, 0.5, [aggregate.make_aggregator("mean", 2)])
    with pytest.raises(NonFiniteError, match="member 1"):
        s.certify(X0, 10, 10, 0.01, 10, idx=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n0=0), "n0"), (dict(n=0), "n must"), (dict(batch_size=0), "batch_size"),
    (dict(alpha=1.0), "alpha"), (dict(alpha=0.0), "alpha"),
])
def test_certify_argument_errors(kwargs, match):
    args = dict(n0=10, n=10, alpha=0.01, batch_size=10, idx=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        _smooth(0.2, 0.5).certify(X0, **args)


def test_constructor_errors():
    member = linear_member(0.1)
    agg = [aggregate.make_aggregator("mean", 1)]
    with pytest.raises(ValueError, match="sigma"):
        Smooth([member], 2, 0.0, agg)
    with pytest.raises(ValueError, match="logit_noise"):
        Smooth([member], 2, 0.5, agg, logit_noise=-1)
    with pytest.raises(ValueError, match="at least one member"):
        Smooth([], 2, 0.5, agg)


# ---- adaptive sampling and K-consensus (Horvath et al. 2022) ------------------------------


def test_adaptive_certificates_are_sound():
    """Target radius above the exact one: certifying it is an error, rate <= alpha."""
    sigma, d, alpha = 0.5, 0.3, 0.05
    smooth = _smooth(d, sigma, seed=4)
    wrong = 0
    for idx in range(300):
        c = smooth.certify_radius(X0, 0.32, 20, [50, 200, 1000], alpha, 500, idx=idx)["single"]
        wrong += c.certified
    # p_A = Phi(0.6) = 0.726 < p_thr = Phi(0.64) = 0.739. Binomial(300, .05) > 25: p < 0.01.
    assert wrong <= 25, wrong


def test_adaptive_stops_early_on_easy_and_hopeless_images():
    stages = [100, 1000, 10000]
    easy = _smooth(2.0, 0.5).certify_radius(X0, 0.5, 50, stages, 0.001, 1000, idx=0)["single"]
    # 100/100 votes: lower bound (0.001/3)^(1/100) = 0.923 > Phi(1) = 0.841 at stage one.
    assert easy.certified and easy.samples == 100 and easy.prediction == 1
    assert easy.radius >= 0.5
    hopeless = _smooth(0.05, 0.5).certify_radius(X0, 1.0, 50, stages, 0.001, 1000, idx=0)["single"]
    assert not hopeless.certified and hopeless.samples == 100  # upper bound far below p_thr
    with pytest.raises(ValueError, match="stages"):
        _smooth(0.1, 0.5).certify_radius(X0, 0.5, 10, [100, 100], 0.01, 100, idx=0)


def _constant(cls, k=3):
    def member(images):
        return tf.tile(tf.one_hot([cls], k) * 5.0, [tf.shape(images)[0], 1])
    return member


def test_k_consensus_votes_and_savings():
    members = [_constant(1), _constant(1), _constant(2), _constant(2), _constant(2)]
    aggs = [aggregate.make_aggregator(a, 5) for a in ("mean", "mv")]
    full = Smooth(members, 3, 0.5, aggs)
    assert full.sample_counts(X0, 100, 50, idx=0)["mv"].tolist() == [0, 0, 100]
    assert full.member_passes == 500
    k2 = Smooth(members, 3, 0.5, aggs, consensus_k=2)  # the first two agree on class 1
    assert k2.sample_counts(X0, 100, 50, idx=0)["mean"].tolist() == [0, 100, 0]
    assert k2.member_passes == 200
    k3 = Smooth(members, 3, 0.5, aggs, consensus_k=3)  # they disagree: all five decide
    assert k3.sample_counts(X0, 100, 50, idx=0)["mean"].tolist() == [0, 0, 100]
    assert k3.member_passes == 500
    with pytest.raises(ValueError, match="consensus_k"):
        Smooth(members, 3, 0.5, aggs, consensus_k=6)


def test_k_consensus_on_a_real_boundary_mixes_both_paths():
    # Members with different boundaries: near them some draws agree, some do not.
    members = [linear_member(d) for d in (0.1, 0.0, -0.1, 0.05, -0.05)]
    aggs = [aggregate.make_aggregator("mean", 5)]
    full = Smooth(members, 2, 0.5, aggs, seed=3)
    k2 = Smooth(members, 2, 0.5, aggs, seed=3, consensus_k=2)
    a, b = full.sample_counts(X0, 4000, 1000, idx=0)["mean"], k2.sample_counts(X0, 4000, 1000, idx=0)["mean"]
    assert a.sum() == b.sum() == 4000
    assert 2 * 4000 < k2.member_passes < 5 * 4000
    assert abs(int(a[1]) - int(b[1])) < 400  # a different but close base classifier


def test_xla_gives_the_same_counts_on_large_margins():
    members = [linear_member(d) for d in (1.5, 2.0)]
    aggs = [aggregate.make_aggregator(a, 2) for a in ("mean", "mv", "gm")]
    plain = Smooth(members, 2, 0.25, aggs, seed=1)
    xla = Smooth(members, 2, 0.25, aggs, seed=1, jit_compile=True)
    a, b = plain.sample_counts(X0, 3000, 1000, idx=0), xla.sample_counts(X0, 3000, 1000, idx=0)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    with pytest.raises(ValueError, match="XLA"):
        Smooth(members, 2, 0.25, aggs, consensus_k=1, jit_compile=True)


def test_batch_api_reproduces_per_image_certify_and_derives_distinct_keys():
    import tensorflow as tf

    from cear_tf.smoothing import aggregate
    from cear_tf.smoothing.core import Smooth
    from cear_tf.smoothing.decisions import ABSTAIN, content_id
    w = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    def member(x):
        return tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w)

    smooth = Smooth([member], 3, 0.5, [aggregate.make_aggregator("single", 1)], seed=2)
    images = np.random.default_rng(1).uniform(size=(4, 4, 4, 1)).astype(np.float32)
    got = smooth.certify_batch(images, 20, 300, 0.01, 64, image_ids=[7, 3, 100, 0])["single"]
    for j, idx in enumerate([7, 3, 100, 0]):
        one = smooth.certify(images[j], 20, 300, 0.01, 64, idx=idx)["single"]
        assert (got.prediction[j], got.count[j], got.radius[j]) == (one.prediction, one.count,
                                                                    one.radius)
    assert got.image_id.tolist() == [7, 3, 100, 0]
    # Without ids: keys from the pixels, distinct per image, stable per image.
    derived = smooth.certify_batch(images, 20, 300, 0.01, 64)["single"]
    assert len(set(derived.image_id.tolist())) == 4
    assert derived.image_id[2] == content_id(images[2]) == content_id(images[2].copy())
    again = smooth.certify_batch(images[2:3], 20, 300, 0.01, 64)["single"]
    assert again.count[0] == derived.count[2]
    # A repeated id would make two images share draws: refused.
    with pytest.raises(ValueError, match="repeat"):
        smooth.certify_batch(images[:2], 20, 300, 0.01, 64, image_ids=[5, 5])
    answers = smooth.predict_batch(images, 300, 0.01, 64, image_ids=[7, 3, 100, 0])["single"]
    assert answers.dtype == np.int64 and all(a == ABSTAIN or 0 <= a < 3 for a in answers)


# ---- pooled member votes (the released code's counting; not a certificate) -----------------

def _pooled_engine(distances, sigma=0.5, aggregations=("mean", "mv")):
    """Members at the given signed distances; each votes class 1 where its margin is > 0."""
    members = [linear_member(d) for d in distances]
    aggs = [aggregate.make_aggregator(a, len(members)) for a in aggregations]
    return Smooth(members, 2, sigma, aggs, seed=3, pooled_votes=True)


def test_pooled_votes_all_correct_give_both_closed_form_radii():
    sigma, n, alpha, m = 0.5, 2000, 0.001, 5
    smooth = _pooled_engine([10.0] * m, sigma)  # every member, every draw: class 1
    got = smooth.certify(X0, 50, n, alpha, 1000, idx=0)
    sound_cap = sigma * norm.ppf(alpha ** (1 / n))
    pooled_cap = sigma * norm.ppf((alpha / 2) ** (1 / (n * m)))  # released level: alpha / 2
    for name in ("mean", "mv"):
        c = got[name]
        assert (c.prediction, c.count, c.num) == (1, n, n)
        assert c.radius == pytest.approx(sound_cap, rel=1e-9)
        p = c.pooled
        assert (p.prediction, p.count, p.num) == (1, n * m, n * m)
        assert p.radius == pytest.approx(pooled_cap, rel=1e-9)
        assert p.radius > c.radius


def test_pooled_votes_count_each_members_own_vote_with_the_released_bound():
    # Three members always vote 0, two always 1: every aggregation votes 0 on every draw
    # (n_A = n), the pooled count gives class 0 three fifths of the n * 5 votes.
    from scipy.stats import beta
    sigma, n, alpha = 0.25, 1000, 0.01
    smooth = _pooled_engine([-10.0, -10.0, -10.0, 10.0, 10.0], sigma)
    c = smooth.certify(X0, 40, n, alpha, 300, idx=4)["mean"]
    assert (c.prediction, c.count) == (0, n)
    p = c.pooled
    assert (p.prediction, p.count, p.num) == (0, 3 * n, 5 * n)
    p_lower = beta.ppf(alpha / 2, 3 * n, 5 * n - 3 * n + 1)
    assert p.p_lower == pytest.approx(p_lower, rel=1e-9)
    assert p.radius == pytest.approx(sigma * norm.ppf(p_lower), rel=1e-9)


def test_pooled_votes_come_from_the_same_passes_and_leave_the_certificate_alone():
    distances = [0.1, 0.15, 0.2]
    plain = Smooth([linear_member(d) for d in distances], 2, 0.5,
                   [aggregate.make_aggregator("mv", 3)], seed=3)
    pooled = _pooled_engine(distances, aggregations=("mv",))
    a = plain.certify(X0, 100, 3000, 0.001, 700, idx=2)["mv"]
    b = pooled.certify(X0, 100, 3000, 0.001, 700, idx=2)["mv"]
    assert a.pooled is None and b.pooled is not None
    assert (a.prediction, a.radius, a.count, a.num) == (b.prediction, b.radius, b.count, b.num)
    assert plain.member_passes == pooled.member_passes == 3 * 3100
    # The pooled votes of the three members sum to 3 * n and do not depend on the batch size.
    counts = pooled.sample_counts(X0, 3000, 700, idx=2)
    assert counts["pooled member votes"].sum() == 9000
    again = pooled.sample_counts(X0, 3000, 1000, idx=2)
    np.testing.assert_array_equal(counts["pooled member votes"], again["pooled member votes"])


def test_pooled_cap_at_the_papers_protocol_exceeds_the_sound_cap():
    # Table 5's CEAR(RW) 5% at R = 2.0 (CIFAR-10, sigma 0.5, N = 100,000, alpha = 0.001, five
    # members) lies above the sound cap and below the pooled one.
    from cear_tf.smoothing.decisions import certify_decision, pooled_decision
    n, m, sigma, alpha = 100_000, 5, 0.5, 0.001
    sound = certify_decision(np.array([100, 0]), np.array([n, 0]), n, alpha, sigma)
    pooled = pooled_decision(np.array([100 * m, 0]), np.array([n * m, 0]), n, m, alpha, sigma)
    assert round(sound.radius, 3) == 1.906 and sound.radius < 2.0
    assert round(pooled.radius, 3) == 2.085 and pooled.radius > 2.0


def test_pooled_votes_refused_with_consensus():
    with pytest.raises(ValueError, match="consensus_k"):
        Smooth([linear_member(0.1)] * 3, 2, 0.5, [aggregate.make_aggregator("mv", 3)],
               consensus_k=1, pooled_votes=True)


def test_released_rw_weights_match_the_closed_form_noisy_accuracy():
    # One noisy copy per image: a member voting 1 where pixel 0 > 0.5 is right with
    # probability Phi(0.25 / sigma) on images whose pixel 0 is 0.75 (labels all 1).
    from cear_tf.ensemble import fitting
    sigma, n = 0.5, 4000
    images = np.full((n, *SHAPE), 0.5, np.float32)
    images[:, 0, 0, 0] = 0.75
    always_one = lambda x: tf.tile(tf.constant([[0.0, 1.0]]), [tf.shape(x)[0], 1])  # noqa: E731
    lam, acc = fitting.released_robust_weights(
        [linear_member(0.0), always_one], images, np.ones(n, np.int64), sigma, True, 0, 1000)
    p = norm.cdf(0.25 / sigma)
    assert abs(acc[0] - p) < 4 * np.sqrt(p * (1 - p) / n) and acc[1] == 1.0
    np.testing.assert_allclose(lam, acc / acc.sum())
