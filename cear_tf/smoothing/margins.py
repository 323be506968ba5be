"""Margins of the members' probabilities under noise and their pooled variance statistics
(Horvath et al. 2022): the measured variance ratio of the soft ensemble of the first k
members against (1 + zeta (k - 1)) / k. The command line is cear_tf.cli.variance.
"""

from __future__ import annotations

import numpy as np


def margins(member_probs: np.ndarray, label: int) -> np.ndarray:
    """[M, D] margins p_i[y] - p_i[c'] of one image from [M, D, K] member probabilities."""
    mean = member_probs.mean(axis=(0, 1)).copy()
    mean[label] = -np.inf
    runner_up = int(np.argmax(mean))
    return member_probs[:, :, label] - member_probs[:, :, runner_up]

def margin_statistics(per_image_margins: list[np.ndarray]) -> dict:
    """Pooled single-member variance, correlation zeta and the measured and predicted
    variance ratios Var(mean of first k) / Var(one member) for k = 1..M.

    The measured ratio divides by the mean single-member variance of the first k members,
    so that for identical, independent members it is exactly 1/k in expectation whatever
    the members' individual variances.
    """
    m = per_image_margins[0].shape[0]
    covs = np.stack([np.cov(x) for x in per_image_margins])  # [images, M, M]
    pooled = covs.sum(axis=0)  # [M, M]
    var_total = np.trace(pooled)
    if var_total <= 0:
        raise ValueError("the margins do not vary under the noise (every member saturated on "
                         "every image): the variance ratio is undefined")
    zeta = (pooled.sum() - var_total) / ((m - 1) * var_total) if m > 1 else 0.0
    rows = []
    for k in range(1, m + 1):
        ensemble_var = pooled[:k, :k].sum() / k**2
        single_var = np.trace(pooled[:k, :k]) / k
        rows.append(dict(k=k, measured_ratio=float(ensemble_var / single_var),
                         predicted_ratio=float((1 + zeta * (k - 1)) / k),
                         ensemble_variance=float(ensemble_var / len(per_image_margins))))
    return dict(zeta=float(zeta), single_variance=float(var_total / (m * len(per_image_margins))),
                member_variances=(np.diag(pooled) / len(per_image_margins)).tolist(), by_k=rows)
