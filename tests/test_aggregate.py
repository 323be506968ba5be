import numpy as np
import pytest
import tensorflow as tf

from cear_tf.smoothing import aggregate


def _simplex(rng, m, b, k, concentration=1.0):
    return rng.dirichlet(np.full(k, concentration), size=(m, b)).astype(np.float32)


def numpy_weiszfeld(points, tol=1e-10, max_iter=10000):
    """Plain Weiszfeld on one set of points [M, K], no projection (stays in the hull)."""
    q = points.mean(axis=0)
    for _ in range(max_iter):
        d = np.maximum(np.linalg.norm(points - q, axis=1), 1e-12)
        new = (points / d[:, None]).sum(axis=0) / (1 / d).sum()
        if np.linalg.norm(new - q) < tol:
            return new
        q = new
    return q


def test_gm_of_identical_vectors_is_that_vector(rng):
    p = _simplex(rng, 1, 8, 10)
    probs = np.repeat(p, 5, axis=0)
    out = aggregate.aggregate_geometric_median(tf.constant(probs)).numpy()
    np.testing.assert_allclose(out, p[0], atol=1e-6)


def test_gm_majority_resists_outliers(rng):
    k = 10
    majority = np.zeros(k, np.float32)
    majority[3] = 0.7
    majority[5] = 0.3
    outliers = np.eye(k, dtype=np.float32)[[0, 9]]  # two confident, wrong members
    probs = np.stack([majority, majority, majority, *outliers])[:, None, :]
    gm = aggregate.aggregate_geometric_median(tf.constant(probs), tolerance=1e-9,
                                              max_iterations=1000).numpy()[0]
    np.testing.assert_allclose(gm, majority, atol=1e-4)
    mean = probs.mean(axis=0)[0]
    assert np.linalg.norm(mean - majority) > 0.2  # the mean is dragged, the median is not


def test_gm_lies_on_simplex_and_matches_numpy(rng):
    probs = _simplex(rng, 5, 64, 10, concentration=0.3)
    gm = aggregate.aggregate_geometric_median(tf.constant(probs, tf.float64), tolerance=1e-12,
                                              max_iterations=5000).numpy()
    assert (gm >= 0).all()
    np.testing.assert_allclose(gm.sum(axis=1), 1.0, atol=1e-9)
    expected = np.stack([numpy_weiszfeld(probs[:, b].astype(np.float64)) for b in range(64)])
    np.testing.assert_allclose(gm, expected, atol=1e-5)


def test_gm_runs_in_graph_batched(rng):
    probs = _simplex(rng, 5, 32, 10)
    fn = tf.function(lambda p: aggregate.aggregate_geometric_median(p, 1e-6, 50),
                     input_signature=[tf.TensorSpec([5, None, 10], tf.float32)])
    out = fn(tf.constant(probs)).numpy()
    assert out.shape == (32, 10)
    np.testing.assert_allclose(out, aggregate.aggregate_geometric_median(
        tf.constant(probs), 1e-6, 50).numpy(), atol=1e-6)


def test_majority_vote_and_tie_rule():
    probs = np.array([
        [[0.1, 0.9, 0.0], [0.6, 0.3, 0.1]],
        [[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]],
        [[0.5, 0.4, 0.1], [0.2, 0.5, 0.3]],
    ], np.float32)
    votes = aggregate.aggregate_majority_vote(tf.constant(probs)).numpy()
    np.testing.assert_array_equal(votes, [[1, 2, 0], [1, 1, 1]])
    # Three-way tie in the second row: the lowest class index wins.
    assert tf.argmax(votes, axis=-1).numpy().tolist() == [1, 0]


def test_weighted_and_mean(rng):
    probs = _simplex(rng, 3, 4, 5)
    agg = aggregate.make_aggregator("rw", 3, weights=[2.0, 1.0, 1.0])
    np.testing.assert_allclose(agg(tf.constant(probs)).numpy(),
                               0.5 * probs[0] + 0.25 * probs[1] + 0.25 * probs[2], rtol=1e-6)
    np.testing.assert_allclose(aggregate.make_aggregator("mean", 3)(tf.constant(probs)).numpy(),
                               probs.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(aggregate.make_aggregator("single", 3)(tf.constant(probs)),
                                  probs[0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="median", num_members=3), "allowed: single, mean, mv, rw, gm, sween"),
    (dict(name="rw", num_members=3), "needs weights"),
    (dict(name="sween", num_members=3, weights=[1, 2]), "2 entries but the ensemble has 3"),
    (dict(name="rw", num_members=2, weights=[1, float("nan")]), "finite"),
    (dict(name="rw", num_members=2, weights=[0, 0]), "not all 0"),
    (dict(name="gm", num_members=2, gm_tolerance=0), "tolerance"),
])
def test_make_aggregator_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregate.make_aggregator(**kwargs)


def test_prefix_aggregations_use_only_the_first_k_members():
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(4), size=(5, 6)).astype(np.float32)  # [M=5, B=6, K=4]
    for base in aggregate.PREFIXABLE:
        for k in (1, 3, 5):
            prefix = aggregate.make_aggregator(f"{base}_first{k}", 5)
            alone = aggregate.make_aggregator(base, k)
            np.testing.assert_allclose(prefix(tf.constant(probs)).numpy(),
                                       alone(tf.constant(probs[:k])).numpy(), rtol=1e-6)
            log_p = tf.math.log(tf.constant(probs))
            np.testing.assert_allclose(prefix.log_scores(log_p).numpy(),
                                       alone.log_scores(log_p[:k]).numpy(), rtol=1e-5)
    first = aggregate.make_aggregator("mean_first1", 5)
    np.testing.assert_allclose(first(tf.constant(probs)).numpy(), probs[0], rtol=1e-6)


def test_prefix_aggregation_names_are_checked():
    assert aggregate.parse_aggregation("mean_first3") == ("mean", 3)
    assert aggregate.parse_aggregation("gm") == ("gm", None)
    for bad in ("rw_first2", "mean_first0", "mean_first", "first3", "mean_first03x"):
        assert aggregate.parse_aggregation(bad) is None, bad
    with pytest.raises(ValueError, match="needs 6 members; the ensemble has 5"):
        aggregate.make_aggregator("mean_first6", 5)
    with pytest.raises(ValueError, match="_first<k>"):
        aggregate.make_aggregator("rw_first2", 5)
