"""What was tried to lift the fused LeNet-5 first layer (5x5 convolution of a 1-channel image
to 6 M outputs, ReLU, 2x2 max pool): formulations timed interleaved against tf.nn.conv2d,
with each one's largest deviation from it.

  python benchmarks/conv1_formulations.py --num_members=5 --repeats=5

Not part of the library: an experiment whose answer (tf.nn.conv2d stays) is in
docs/performance.md.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import app, flags

from cear_tf.performance.timing import interleaved_seconds, stats


def _space_to_depth_kernel(w: np.ndarray) -> np.ndarray:
    """The 5x5 SAME convolution + 2x2 pool of a 1-channel image as a 3x3 convolution of its
    2x2 space-to-depth (4 channels) to 4 pooling phases x C outputs: phase (a, b) of output
    (2p + a, 2q + b) reads input (2p + a + u, 2q + b + v) = s2d[p + (a + u) // 2, ...]."""
    c = w.shape[-1]
    out = np.zeros((3, 3, 4, 4 * c), np.float32)
    for a in range(2):
        for b in range(2):
            for du in range(3):
                for dv in range(3):
                    for r in range(2):
                        for s in range(2):
                            u, v = 2 * du + r - a, 2 * dv + s - b
                            if 0 <= u < 5 and 0 <= v < 5:
                                out[du, dv, 2 * r + s, (2 * a + b) * c:(2 * a + b + 1) * c] = \
                                    w[u, v, 0]
    return out


def conv1_formulations(m: int, batch: int, repeats: int, calls: int = 20) -> dict:
    """Seconds per `calls` calls of the fused LeNet-5 first layer (28x28x1 -> 14x14x6M: 5x5
    SAME convolution, bias, ReLU, 2x2 max pool) in each formulation, interleaved per repeat,
    and each one's largest deviation from tf.nn.conv2d's output."""
    rng = np.random.default_rng(0)
    c = 6 * m
    w = rng.normal(size=(5, 5, 1, c)).astype(np.float32)
    bias = tf.constant(rng.normal(size=(c,)).astype(np.float32))
    kernel, flat = tf.constant(w), tf.constant(w.reshape(25, c))
    s2d_kernel = tf.constant(_space_to_depth_kernel(w))

    def pool(y):
        return tf.nn.max_pool2d(tf.nn.relu(y + bias), 2, 2, "VALID")

    def conv2d(x):
        return pool(tf.nn.conv2d(x, kernel, 1, "SAME"))

    def patches_matmul(x):  # im2col by extract_patches, then one matmul
        p = tf.image.extract_patches(x, [1, 5, 5, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
        return pool(tf.reshape(tf.reshape(p, [-1, 25]) @ flat, [-1, 28, 28, c]))

    def shifted_sum(x):  # 25 shifted copies of the image, each scaled by a filter tap
        xp = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])
        y = 0.0
        for u in range(5):
            for v in range(5):
                y += xp[:, u:u + 28, v:v + 28, :] * w[u, v, 0]
        return pool(y)

    def space_to_depth(x):  # pooling phases as channels: max over them is the pool
        xp = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]]), 2)
        y = tf.nn.conv2d(xp, s2d_kernel, 1, "VALID")
        y = tf.reduce_max(tf.reshape(y, [-1, 14, 14, 4, c]), axis=3)
        return tf.nn.relu(y + bias)

    variants = {name: tf.function(f) for name, f in (
        ("conv2d", conv2d), ("extract_patches + matmul", patches_matmul),
        ("25 shifted multiply-adds", shifted_sum), ("space-to-depth 3x3 conv", space_to_depth))}
    x = tf.constant(rng.uniform(size=(batch, 28, 28, 1)).astype(np.float32))
    want = variants["conv2d"](x).numpy()
    deviation = {name: float(np.abs(f(x).numpy() - want).max()) for name, f in variants.items()}
    seconds = interleaved_seconds(variants, x, repeats, calls)
    return dict(batch=batch, calls=calls, outputs=c, seconds=seconds, deviation=deviation)


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_integer("num_members", 5, "Members fused (the layer has 6 x M outputs).")
    flags.DEFINE_integer("batch", 1000, "Images per call.")
    flags.DEFINE_integer("repeats", 3, "Repeats; the formulations run in turn in each.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = conv1_formulations(FLAGS.num_members, FLAGS.batch, FLAGS.repeats)
    base = out["seconds"]["conv2d"]
    print(f"fused LeNet-5 conv1 + ReLU + pool ({out['outputs']} outputs, batch {out['batch']}): "
          f"speed relative to tf.nn.conv2d (median, min-max over repeats; interleaved)")
    print("| formulation | speed vs conv2d | max deviation from conv2d |")
    print("|---|---|---|")
    for name, times in out["seconds"].items():
        print(f"| {name} | {stats([b / t for b, t in zip(base, times)])}x | "
              f"{out['deviation'][name]:.1e} |")


if __name__ == "__main__":
    define_flags()
    app.run(main)
