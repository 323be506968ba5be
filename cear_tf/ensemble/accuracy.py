"""A member's test accuracy, clean and under Gaussian noise, with 95% intervals.

Noisy accuracy = mean over test images of the fraction of noise draws (unclipped, as
certification draws them) that the member classifies correctly; its 95% interval is the mean
+- 1.96 standard errors of the per-image fractions (draws of one image are correlated, so the
images, not the draws, are the independent samples). Clean accuracy has a 95% Wilson
interval. The draws of image i come from its own stream (seed, image i), so they do not
depend on the batch and every member sees the same noisy images. The command line is
cear_tf.cli.member_accuracy.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from cear_tf.smoothing.noise import noisy_images

Z95 = 1.959963984540054


@dataclasses.dataclass(frozen=True)
class Accuracy:
    """An accuracy on `images` test images with its 95% interval [low, high]."""

    value: float
    low: float
    high: float
    images: int


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion (coverage ~95% at z = 1.96,
    also near 0 and 1, where the normal interval undercovers)."""
    if n <= 0:
        raise ValueError(f"need at least one trial, got n = {n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def clean_accuracy(correct: np.ndarray) -> Accuracy:
    """Accuracy of per-image 0/1 outcomes with its Wilson interval."""
    n, k = len(correct), int(np.sum(correct))
    low, high = wilson_interval(k, n)
    return Accuracy(k / n, low, high, n)


def noisy_accuracy(fractions: np.ndarray) -> Accuracy:
    """Mean of per-image fractions of correct noisy draws, +- 1.96 standard errors over
    images (clipped to [0, 1])."""
    n = len(fractions)
    mean = float(np.mean(fractions))
    se = float(np.std(fractions, ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return Accuracy(mean, max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se), n)


_compiled: dict = {}


def _noisy_images_graph():
    """noisy_images as one graph (built on first use: the per-image keys run ~45x faster
    than eager map_fn steps)."""
    if "noisy_images" not in _compiled:
        _compiled["noisy_images"] = tf.function(noisy_images, reduce_retracing=True)
    return _compiled["noisy_images"]


def measure(member, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
            sigma: float, draws: int, seed: int, batch: int) -> tuple[Accuracy, Accuracy]:
    """(clean, noisy at sigma) accuracy of one loaded member on images[indices], `batch`
    images per forward pass."""
    clean, fractions = [], []
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        x, y = tf.convert_to_tensor(images[idx], tf.float32), labels[idx]
        logits = member(x).numpy()
        clean.append(np.argmax(logits, axis=1) == y)
        noisy = _noisy_images_graph()(x, tf.convert_to_tensor(idx), sigma, draws, seed)
        noisy_logits = member(noisy).numpy()
        predicted = np.argmax(noisy_logits, axis=1).reshape(len(idx), draws)
        fractions.append(np.mean(predicted == y[:, None], axis=1))
    return clean_accuracy(np.concatenate(clean)), noisy_accuracy(np.concatenate(fractions))
