"""Does the geometric median need a projection onto the simplex after each Weiszfeld step?

Each Weiszfeld iterate is a convex combination of the members' probability vectors, so it
lies on the simplex already; the projection (a sort per row and step) can only undo float
rounding. This script times cear_tf's GM (no projection) against the same iterations with
the sort-based projection (as the library computed it until 2026-12-07), interleaved, on
the softmax outputs of real members on noisy test images, and counts the draws whose
aggregated class (the vote certification counts) differs between the two.

  python benchmarks/gm_projection.py --members=results/mnist_sigma100/cear --sigma=1.0

Not part of the library: an experiment whose answer is in docs/performance.md.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import app, flags

from cear_tf.data import datasets
from cear_tf.ensemble import loading
from cear_tf.performance.timing import interleaved_seconds, stats
from cear_tf.smoothing import aggregate


def project_to_simplex(v: tf.Tensor) -> tf.Tensor:
    """Euclidean projection of each row of [..., K] onto the probability simplex (the
    sort-based algorithm of Held et al. 1974 / Duchi et al. 2008)."""
    k = tf.shape(v)[-1]
    u = tf.sort(v, axis=-1, direction="DESCENDING")
    css = tf.cumsum(u, axis=-1) - 1.0
    ind = tf.cast(tf.range(1, k + 1), v.dtype)
    rho = tf.reduce_sum(tf.cast(u - css / ind > 0, tf.int32), axis=-1, keepdims=True)
    theta = tf.gather(css, rho - 1, batch_dims=len(v.shape) - 1) / tf.cast(rho, v.dtype)
    return tf.maximum(v - theta, 0.0)


def projected_geometric_median(probs: tf.Tensor, tolerance: float = 1e-6,
                               max_iterations: int = 100) -> tf.Tensor:
    """cear_tf's Weiszfeld iterations (same start, floor and stopping rule) with the
    projection onto the simplex after each step."""
    q0 = tf.reduce_mean(probs, axis=0)

    def step(i, q, moved):
        del moved
        w = 1.0 / aggregate.floored_distance(probs - q[None])
        q_new = tf.reduce_sum(w[..., None] * probs, axis=0) / tf.reduce_sum(w, axis=0)[..., None]
        q_new = project_to_simplex(q_new)
        return i + 1, q_new, tf.reduce_max(tf.norm(q_new - q, axis=-1))

    _, q, _ = tf.while_loop(
        lambda i, q, moved: tf.logical_and(i < max_iterations, moved > tolerance),
        step, (tf.constant(0), q0, tf.constant(np.inf, probs.dtype)))
    return q


def member_probabilities(member_dirs: list[str], images: np.ndarray, sigma: float,
                         draws: int, seed: int = 0) -> list[tf.Tensor]:
    """[M, draws, K] softmax outputs of the members on `draws` Gaussian draws of each image."""
    members = loading.load_ensemble(loading.resolve_member_dirs(member_dirs))
    rng = np.random.default_rng(seed)
    out = []
    for x in images:
        noisy = tf.constant((x[None] + sigma * rng.standard_normal((draws, *x.shape)))
                            .astype(np.float32))
        out.append(tf.stack([tf.nn.softmax(m(noisy)) for m in members]))
    return out


def compare(batches: list[tf.Tensor], repeats: int) -> dict:
    """Seconds per pass over `batches` of each variant (interleaved per repeat), the draws
    whose argmax differs and the largest difference of the aggregates."""
    variants = {"projected": tf.function(projected_geometric_median),
                "cear_tf": tf.function(aggregate.aggregate_geometric_median)}
    differ, largest = 0, 0.0
    for p in batches:
        a, b = variants["projected"](p), variants["cear_tf"](p)
        differ += int(tf.reduce_sum(tf.cast(tf.argmax(a, -1) != tf.argmax(b, -1), tf.int32)))
        largest = max(largest, float(tf.reduce_max(tf.abs(a - b))))

    def over_batches(fn):  # one pass over every batch; the last result fetched ends it
        return lambda _: [fn(p) for p in batches][-1]

    seconds = interleaved_seconds({k: over_batches(f) for k, f in variants.items()}, None,
                                  repeats, 1)
    return dict(seconds=seconds, draws=sum(int(p.shape[1]) for p in batches),
                argmax_differs=differ, max_abs_difference=largest)


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("members", ["results/mnist_sigma100/cear"], "Ensemble directory.")
    flags.DEFINE_float("sigma", 1.0, "Noise level of the draws.")
    flags.DEFINE_string("data_dir", "../shared/datasets", "Where MNIST is.")
    flags.DEFINE_integer("images", 14, "Test images (every 100th from index 2160).")
    flags.DEFINE_integer("draws", 1000, "Noise draws per image (certify's batch).")
    flags.DEFINE_integer("repeats", 5, "Repeats; the variants run in turn in each.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    images, _ = datasets.load_split("mnist", "test", data_dir=FLAGS.data_dir)
    chosen = images[2160:2160 + 100 * FLAGS.images:100]
    out = compare(member_probabilities(FLAGS.members, chosen, FLAGS.sigma, FLAGS.draws),
                  FLAGS.repeats)
    base = out["seconds"]["projected"]
    print(f"GM of {','.join(FLAGS.members)} on {out['draws']} draws ({len(chosen)} images, "
          f"sigma {FLAGS.sigma:g}), {FLAGS.repeats} interleaved repeats")
    print("| variant | speed vs projected (median, min-max) | seconds per pass (median) |")
    print("|---|---|---|")
    for name, times in out["seconds"].items():
        print(f"| {name} | {stats([b / t for b, t in zip(base, times)])}x | "
              f"{float(np.median(times)):.3f} |")
    print(f"draws whose aggregated class differs: {out['argmax_differs']} of {out['draws']}; "
          f"largest difference of the aggregates: {out['max_abs_difference']:.1e}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
