"""White-box attacks in TensorFlow: APGD-CE, APGD-DLR (Croce & Hein 2020a) and FAB (2020b).

Every attack takes a *target*: a callable from images [B, H, W, C] in [0, 1] to scores
[B, K] (logits of a member, or log-probabilities of an aggregated ensemble), and an `eot`
count: losses and gradients are averaged over `eot` calls of the target, which is what an
honest attack on a randomised model (noisy logits) must do (Expectation over
Transformation, Athalye et al. 2018). Inputs stay in [0, 1] and within the budget.

Norms: "inf" (L-infinity) and "2" (L2).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import tensorflow as tf

from cear_tf.config.choices import NORMS

Target = Callable[[tf.Tensor], tf.Tensor]


def check_attack_arguments(norm: str, eps: float | None = None, images=None):
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if images is not None:
        images = np.asarray(images)
        if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 1:
            raise ValueError("images must be finite and in [0, 1]")


# ---- norms and projections --------------------------------------------------------------


def _flat(x):
    return tf.reshape(x, [tf.shape(x)[0], -1])


def expand_like(v, like):
    """[B] -> [B, 1, 1, 1] (as many ones as `like` has non-batch axes)."""
    return tf.reshape(v, [-1] + [1] * (len(like.shape) - 1))


def lp_norm(delta: tf.Tensor, norm: str) -> tf.Tensor:
    flat = _flat(delta)
    if norm == "inf":
        return tf.reduce_max(tf.abs(flat), axis=1)
    return tf.norm(flat, axis=1)


def project(x: tf.Tensor, x_orig: tf.Tensor, eps, norm: str) -> tf.Tensor:
    """Onto the eps-ball around x_orig (per example), then the [0, 1] box."""
    delta = x - x_orig
    if norm == "inf":
        e = expand_like(tf.cast(eps, x.dtype) * tf.ones([tf.shape(x)[0]], x.dtype), x)
        delta = tf.clip_by_value(delta, -e, e)
    else:
        n = lp_norm(delta, "2")
        factor = tf.minimum(1.0, tf.cast(eps, x.dtype) / tf.maximum(n, 1e-12))
        delta = delta * expand_like(factor, x)
    return tf.clip_by_value(x_orig + delta, 0.0, 1.0)


# ---- losses ----------------------------------------------------------------------------


def cross_entropy(scores, y):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=scores)


def dlr_loss(scores, y):
    """Difference of Logits Ratio: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)."""
    k = tf.shape(scores)[1]
    sorted_z = tf.sort(scores, axis=1, direction="DESCENDING")
    z_y = tf.gather(scores, y, batch_dims=1)
    others = tf.where(tf.one_hot(y, k) > 0, tf.fill(tf.shape(scores), -np.inf), scores)
    z_other = tf.reduce_max(others, axis=1)
    return -(z_y - z_other) / (sorted_z[:, 0] - sorted_z[:, 2] + 1e-12)


LOSSES = {"ce": cross_entropy, "dlr": dlr_loss}


def loss_and_gradient(target: Target, x, y, loss_name: str, eot: int = 1):
    """Per-example loss [B], its gradient and the scores, each averaged over `eot` draws."""
    loss_fn = LOSSES[loss_name]
    total_loss, total_grad, total_scores = 0.0, 0.0, 0.0
    for _ in range(eot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = target(x)
            loss = loss_fn(scores, y)
        grad = tape.gradient(loss, x)
        # A NaN gradient would silently turn the iterate into NaN; say where it came from.
        grad = tf.debugging.assert_all_finite(
            grad, f"the attack target's {loss_name} gradient is NaN or Inf")
        total_grad += grad
        total_loss += loss
        total_scores += scores
    return total_loss / eot, total_grad / eot, total_scores / eot


def predict(target: Target, x, eot: int = 1):
    """argmax of the target's scores averaged over `eot` draws."""
    total = 0.0
    for _ in range(eot):
        total += target(x)
    return tf.argmax(total, axis=1, output_type=tf.int32)


# ---- APGD --------------------------------------------------------------------------------


def apgd_checkpoints(n_iter: int) -> list[int]:
    """Iterations where APGD may halve its step: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # Rounded like the reference implementation (int(p * n_iter)), guarding float error.
    return sorted({int(math.floor(q * n_iter + 1e-9)) for q in p[1:] if q <= 1})


def _step_direction(grad, norm):
    if norm == "inf":
        return tf.sign(grad)
    return grad / expand_like(tf.maximum(lp_norm(grad, "2"), 1e-12), grad)


def _random_start(x, eps, norm, rng: tf.random.Generator):
    """A random point of the eps-ball (eps scalar or per example [B]) inside the box."""
    e = tf.cast(eps, x.dtype) * tf.ones([tf.shape(x)[0]], x.dtype)
    if norm == "inf":
        delta = rng.uniform(tf.shape(x), -1.0, 1.0) * expand_like(e, x)
    else:
        d = rng.normal(tf.shape(x))
        radius = e * rng.uniform([tf.shape(x)[0]])
        delta = d / expand_like(tf.maximum(lp_norm(d, "2"), 1e-12), x) * expand_like(radius, x)
    return project(x + delta, x, e, norm)


def apgd(target: Target, x_orig, y, eps: float, norm: str = "inf", loss: str = "ce",
         n_iter: int = 100, n_restarts: int = 1, eot: int = 1, seed: int = 0,
         rho: float = 0.75, momentum: float = 0.75) -> tf.Tensor:
    """Auto-PGD (Croce & Hein 2020a, Algorithm 1), batched, untargeted.

    Step size starts at 2 eps and is halved at checkpoints where fewer than rho of the
    steps since the last checkpoint increased the loss, or where neither the step nor the
    best loss changed; after a halving the iterate restarts from the best point. Momentum
    0.75. Returns for each example the first misclassified iterate found over all
    restarts, else the highest-loss point of the last restart.
    """
    check_attack_arguments(norm, eps, x_orig)
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; allowed: {', '.join(LOSSES)}")
    x_orig = tf.convert_to_tensor(x_orig, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    rng = tf.random.Generator.from_seed(seed)
    checkpoints = set(apgd_checkpoints(n_iter))
    gradient = tf.function(lambda x_, y_: loss_and_gradient(target, x_, y_, loss, eot))
    best_adv = tf.identity(x_orig)
    fooled = tf.logical_not(tf.equal(predict(target, x_orig, eot), y))
    b = tf.shape(x_orig)[0]
    for _ in range(n_restarts):
        x = _random_start(x_orig, eps, norm, rng)
        step = tf.fill([b], 2.0 * eps)
        loss_x, grad, scores = gradient(x, y)
        best_loss, x_best, grad_best = loss_x, x, grad
        x_prev = x
        successes = tf.zeros([b])
        last_check, loss_at_check, step_at_check = 0, best_loss, step
        for k in range(n_iter):
            fooled_now = tf.logical_not(tf.equal(tf.argmax(scores, axis=1, output_type=tf.int32), y))
            newly = tf.logical_and(fooled_now, tf.logical_not(fooled))
            best_adv = tf.where(expand_like(newly, x), x, best_adv)
            fooled = tf.logical_or(fooled, fooled_now)
            z = project(x + expand_like(step, x) * _step_direction(grad, norm), x_orig, eps, norm)
            a = momentum if k > 0 else 1.0
            x_new = project(x + a * (z - x) + (1 - a) * (x - x_prev), x_orig, eps, norm)
            x_prev, x = x, x_new
            loss_prev = loss_x
            loss_x, grad, scores = gradient(x, y)
            successes += tf.cast(loss_x > loss_prev, tf.float32)
            improved = loss_x > best_loss
            x_best = tf.where(expand_like(improved, x), x, x_best)
            grad_best = tf.where(expand_like(improved, x), grad, grad_best)
            best_loss = tf.where(improved, loss_x, best_loss)
            if k + 1 in checkpoints:
                window = k + 1 - last_check
                few_successes = successes < rho * window
                stalled = tf.logical_and(tf.equal(step, step_at_check),
                                         tf.equal(best_loss, loss_at_check))
                halve = tf.logical_or(few_successes, stalled)
                step_at_check = step
                step = tf.where(halve, step / 2, step)
                x = tf.where(expand_like(halve, x), x_best, x)
                grad = tf.where(expand_like(halve, x), grad_best, grad)
                successes = tf.zeros([b])
                last_check, loss_at_check = k + 1, best_loss
        fooled_now = tf.logical_not(tf.equal(tf.argmax(scores, axis=1, output_type=tf.int32), y))
        newly = tf.logical_and(fooled_now, tf.logical_not(fooled))
        best_adv = tf.where(expand_like(newly, x), x, best_adv)
        fooled = tf.logical_or(fooled, fooled_now)
        best_adv = tf.where(expand_like(fooled, x), best_adv, x_best)
    return best_adv



# ---- FAB ---------------------------------------------------------------------------------


def project_onto_hyperplane_in_box(z, w, b, norm: str, iterations: int = 60):
    """argmin ||delta||_p  s.t.  w . delta = b  and  0 <= z + delta <= 1, per example.

    The minimiser moves along d = sign(b) * (w for L2, sign(w) for L-infinity), clipped to
    the box: delta(t) = clip(t d, -z, 1 - z). |w . delta(t)| grows monotonically with t, so t
    is found by bisection (in log space, as t spans many orders of magnitude). If the
    hyperplane cannot be reached inside the box, the box point closest to it is returned.
    """
    shape = tf.shape(z)
    zf, wf = _flat(z), _flat(w)
    lo, hi = -zf, 1.0 - zf
    d = (wf if norm == "2" else tf.sign(wf)) * tf.sign(b)[:, None]
    target = tf.abs(b)

    def reach(t):
        delta = tf.clip_by_value(t[:, None] * d, lo, hi)
        return delta, tf.abs(tf.reduce_sum(wf * delta, axis=1))

    abs_d = tf.abs(d)
    bound = tf.maximum(tf.abs(lo), tf.abs(hi))
    t_max = tf.reduce_max(tf.where(abs_d > 1e-12, bound / tf.maximum(abs_d, 1e-12), 0.0), axis=1)
    t_max = tf.maximum(t_max, 1e-12)
    log_lo = tf.fill(tf.shape(t_max), tf.math.log(1e-12))
    log_hi = tf.math.log(t_max)
    for _ in range(iterations):
        mid = (log_lo + log_hi) / 2
        _, h = reach(tf.exp(mid))
        below = h < target
        log_lo = tf.where(below, mid, log_lo)
        log_hi = tf.where(below, log_hi, mid)
    delta, _ = reach(tf.exp(log_hi))
    delta = tf.where((target > 0)[:, None], delta, tf.zeros_like(delta))
    return tf.reshape(delta, shape)


def _scores_and_jacobian(target: Target, x, eot: int):
    total_s, total_j = 0.0, 0.0
    for _ in range(eot):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = target(x)
        total_j += tape.batch_jacobian(scores, x)
        total_s += scores
    return total_s / eot, total_j / eot


def fab(target: Target, x_orig, y, norm: str = "inf", n_iter: int = 100, n_restarts: int = 1,
        eps: float | None = None, eot: int = 1, seed: int = 0, alpha_max: float = 0.1,
        eta: float = 1.05, beta: float = 0.9):
    """FAB (Croce & Hein 2020b), untargeted, minimum-norm; returns (x_adv, norms).

    Each step linearises the target at x_k, picks the closest linearised decision boundary
    (|f_l - f_y| / ||grad(f_l - f_y)||_q over l != y, q the dual norm), projects both x_k and
    x_orig onto it inside the [0, 1] box, moves to a convex combination biased towards
    x_orig (weight alpha <= alpha_max, extrapolation eta) and, once misclassified, steps
    back towards x_orig (factor beta). Restarts after the first start from random points
    within eps (or half the best norm found) of x_orig. For points never misclassified
    x_adv = x_orig and the norm is +inf; points misclassified already have norm 0.
    """
    check_attack_arguments(norm, eps, x_orig)
    x_orig = tf.convert_to_tensor(x_orig, tf.float32)
    y = tf.convert_to_tensor(y, tf.int32)
    rng = tf.random.Generator.from_seed(seed)
    jacobian = tf.function(lambda x_: _scores_and_jacobian(target, x_, eot))
    dual = {"inf": 1, "2": 2}[norm]
    b = tf.shape(x_orig)[0]
    clean_fooled = tf.logical_not(tf.equal(predict(target, x_orig, eot), y))
    best = tf.identity(x_orig)
    best_norm = tf.where(clean_fooled, 0.0, np.inf)
    for restart in range(n_restarts):
        if restart == 0:
            x = x_orig
        else:
            default = eps if eps is not None else 0.1
            radius = tf.where(tf.math.is_finite(best_norm), best_norm / 2, default)
            x = _random_start(x_orig, radius, norm, rng)
        for _ in range(n_iter):
            scores, jac = jacobian(x)
            k = tf.shape(scores)[1]
            f_y = tf.gather(scores, y, batch_dims=1)
            j_y = tf.gather(jac, y, batch_dims=1)
            f_diff = scores - f_y[:, None]  # [B, K]
            w = jac - j_y[:, None]  # [B, K, ...]
            w_norm = tf.norm(tf.reshape(w, [b, k, -1]), ord=dual, axis=2)
            dist = tf.abs(f_diff) / tf.maximum(w_norm, 1e-12)
            dist = tf.where(tf.one_hot(y, k) > 0, np.inf, dist)
            l_star = tf.argmin(dist, axis=1, output_type=tf.int32)
            w_star = tf.gather(w, l_star, batch_dims=1)
            f_star = tf.gather(f_diff, l_star, batch_dims=1)
            # Hyperplane of the linearisation at x: w.(z - x) + f = 0.
            delta_x = project_onto_hyperplane_in_box(x, w_star, -f_star, norm)
            offset = tf.reduce_sum(_flat(w_star) * _flat(x_orig - x), axis=1)
            delta_o = project_onto_hyperplane_in_box(x_orig, w_star, -f_star - offset, norm)
            n_x, n_o = lp_norm(delta_x, norm), lp_norm(delta_o, norm)
            alpha = tf.minimum(n_x / tf.maximum(n_x + n_o, 1e-12), alpha_max)
            a = expand_like(alpha, x)
            x = tf.clip_by_value((1 - a) * (x + eta * delta_x) + a * (x_orig + eta * delta_o),
                                 0.0, 1.0)
            fooled = tf.logical_not(tf.equal(predict(target, x, eot), y))
            norms = lp_norm(x - x_orig, norm)
            better = tf.logical_and(fooled, norms < best_norm)
            best = tf.where(expand_like(better, x), x, best)
            best_norm = tf.where(better, norms, best_norm)
            x = tf.where(expand_like(fooled, x), (1 - beta) * x_orig + beta * x, x)
    return best, best_norm


def robust_mask(norms: tf.Tensor, eps: float) -> tf.Tensor:
    """FAB counts as a successful attack at budget eps where its norm is <= eps."""
    return norms <= eps
