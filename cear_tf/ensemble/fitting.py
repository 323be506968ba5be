"""The weights of RW and SWEEN, fitted on validation images.

RW (paper eq. 6): lambda_i = a_i / sum_j a_j, a_i = member i's certified accuracy at a radius
on the validation split, computed by the certify engine in its own noise domain.
The released code's RW weights (docs/deviations.md A2), a reproduction option: a_i = member
i's accuracy on one noisy copy of the test set, clipped to [0, 1] as released.
SWEEN (Liu et al. 2021): lambda = softmax(w), w minimising the negative log-likelihood of
sum_i lambda_i p_i(x + eps) on noisy validation images. The command line is cear_tf.cli.weights.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cear_tf.common.progress import Progress
from cear_tf.smoothing import aggregate, core
from cear_tf.smoothing.noise import NoiseDomain, noisy_images


def robust_weights(members, num_classes, images, labels, sigma, radius, n0, n, alpha,
                   batch_size, logit_noise=0.0, clip=False, seed=0, fused=None):
    """(lambda [M], certified accuracies a [M]) of each member on (images, labels)."""
    # Its own noise domain: validation image i never sees the draws of test image i.
    smooth = core.Smooth(members, num_classes, sigma, aggregate.per_member_aggregators(len(members)),
                    logit_noise=logit_noise, clip=clip, seed=seed,
                    noise_domain=NoiseDomain.RW_WEIGHTS, fused=fused)
    hits = np.zeros(len(members))
    bar = Progress(len(labels), "RW weights", unit="validation image")
    for idx, (x, y) in enumerate(zip(images, labels)):
        smooth.progress = lambda drawn, asked, idx=idx: bar.update(
            idx + drawn / asked) if asked == n else None
        certificates = smooth.certify(x, n0, n, alpha, batch_size, idx=idx)
        bar.update(idx + 1)
        for i, name in enumerate(smooth.names):
            c = certificates[name]
            hits[i] += c.prediction == y and c.radius >= radius
    accuracy = hits / len(labels)
    if accuracy.sum() == 0:
        raise ValueError(f"no member certifies any of the {len(labels)} validation images at "
                         f"radius {radius}: RW weights are undefined (lower --radius, raise --N "
                         f"or --num_images)")
    return accuracy / accuracy.sum(), accuracy

def released_robust_weights(members, images, labels, sigma, clip, seed, batch_size):
    """(lambda [M], accuracies a [M]) as the released `WeightedEnsemble` fits them (A2): a_i =
    member i's accuracy on one noisy copy x + sigma * eps of each image (the test set there;
    its own noise stream here, RW_WEIGHTS_RELEASED, seeded where the released one is not),
    clipped to [0, 1] when `clip`; lambda = a / sum(a)."""
    hits = np.zeros(len(members))
    for start in range(0, len(labels), batch_size):
        idx = np.arange(start, min(start + batch_size, len(labels)))
        noisy = noisy_images(images[idx], idx, sigma, 1, seed,
                                             NoiseDomain.RW_WEIGHTS_RELEASED)
        if clip:
            noisy = tf.clip_by_value(noisy, 0.0, 1.0)
        for i, member in enumerate(members):
            hits[i] += np.sum(np.argmax(member(noisy).numpy(), axis=1) == labels[idx])
    accuracy = hits / len(labels)
    if accuracy.sum() == 0:
        raise ValueError(f"no member classifies any of the {len(labels)} noisy images: RW "
                         f"weights are undefined")
    return accuracy / accuracy.sum(), accuracy


def fit_sween_weights(member_probs: np.ndarray, labels: np.ndarray):
    """softmax(w) minimising -mean log sum_i softmax(w)_i p_i[y] ([M, S, K] probs, [S] labels)."""
    import scipy.optimize
    a = member_probs[:, np.arange(len(labels)), labels].astype(np.float64)  # [M, S]

    def objective(w):
        lam = np.exp(w - w.max())
        lam /= lam.sum()
        s = lam @ a + 1e-12
        g = -(a / s).mean(axis=1)  # d NLL / d lambda
        return -np.log(s).mean(), lam * (g - lam @ g)

    result = scipy.optimize.minimize(objective, np.zeros(len(a)), jac=True, method="L-BFGS-B")
    w = result.x
    lam = np.exp(w - w.max())
    return lam / lam.sum(), float(result.fun)
