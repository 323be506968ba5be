"""Keras trainers for CEAR members: Gaussian-augmented training and the DTS/VGA Distiller.

Both are `keras.Model` subclasses that wrap the network being trained and override
`train_step`/`test_step` (the pattern of keras-io's knowledge-distillation example), so
`fit`, callbacks, checkpoints and tf.distribute work unchanged.

Noise is drawn inside `train_step` from a `keras.random.SeedGenerator`, so every batch of
every epoch sees fresh noise (never a fixed noisy copy of the data set), and a run with
the same seed sees the same noise.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from cear_tf.distribute import replica_seed, scale_for_replicas

NOISE_MODES = ("per_model", "per_example")

# Separate streams derived from a member's seed, so the VGA draw does not depend on how
# many random numbers initialisation or shuffling consumed.
_VGA_STREAM = 0x5647  # "VG"
_NOISE_STREAM = 0x4E53  # "NS"


def derived_seed(stream: int, seed: int) -> int:
    """An int seed for one purpose (`stream`) of a member with seed `seed`."""
    return int(np.random.default_rng([stream, int(seed)]).integers(2**31 - 1))


def vga_sigma(base_sigma: float, seed: int) -> float:
    """VGA training sigma: sigma_tr + beta with beta ~ U(-sigma_tr/2, +sigma_tr/2).

    Drawn once per member from its own seed (paper eq. 1-2), so it is reproducible and
    lies in [sigma_tr/2, 3 sigma_tr/2].
    """
    if base_sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {base_sigma}")
    rng = np.random.default_rng([_VGA_STREAM, int(seed)])
    beta = rng.uniform(-base_sigma / 2, base_sigma / 2)
    return float(base_sigma + beta)


class NoisyInputTrainer(keras.Model):
    """Trains `network` on x + N(0, sigma^2 I), noise drawn fresh per batch, in-graph.

    With `noise_mode="per_example"` each input draws its own standard deviation from
    U(sigma_low, sigma_high) on every step (the per-input VGA variant); otherwise every
    input uses `sigma`. sigma = 0 gives plain clean training (the teacher).

    Subclasses define the loss in `compute_member_loss`; the default is hard-label
    cross-entropy (Gaussian data augmentation, Cohen et al. 2019).

    test_step reports `accuracy` on clean inputs and `noisy_accuracy` on inputs with the
    training noise, the two numbers recorded in a member's metadata.
    """

    def __init__(
        self,
        network: keras.Model,
        sigma: float,
        noise_mode: str = "per_model",
        sigma_range: tuple[float, float] | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise_mode == "per_example":
            if sigma_range is None or not 0 <= sigma_range[0] <= sigma_range[1]:
                raise ValueError(f"per_example noise needs 0 <= low <= high, got {sigma_range}")
        self.network = network
        self.sigma = float(sigma)
        self.noise_mode = noise_mode
        self.sigma_range = tuple(map(float, sigma_range)) if sigma_range else None
        self.noise_seed = keras.random.SeedGenerator(seed=derived_seed(_NOISE_STREAM, seed))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.noisy_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="noisy_accuracy")

    # -- noise ---------------------------------------------------------------------------

    def _next_seed(self):
        # A fresh stateless seed per call, folded with the replica id under a distribution
        # strategy so that replicas do not draw the same noise.
        return replica_seed(tf.cast(self.noise_seed.next(), tf.int64))

    def add_noise(self, x):
        """x + noise at this member's training sigma, fresh on every call."""
        if self.noise_mode == "per_example":
            low, high = self.sigma_range
            batch = tf.shape(x)[0]
            scale = tf.random.stateless_uniform((batch, 1, 1, 1), self._next_seed(), low, high,
                                                dtype=x.dtype)
        elif self.sigma == 0.0:
            return x
        else:
            scale = tf.cast(self.sigma, x.dtype)
        return x + scale * tf.random.stateless_normal(tf.shape(x), self._next_seed(), dtype=x.dtype)

    # -- keras.Model API -------------------------------------------------------------------

    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.noisy_accuracy_tracker]

    def compute_member_loss(self, x_clean, logits, y):
        del x_clean
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def train_step(self, data):
        x, y = _unpack(data)
        noisy = self.add_noise(x)
        with tf.GradientTape() as tape:
            logits = self.network(noisy, training=True)
            loss = self.compute_member_loss(x, logits, y)
            if self.network.losses:
                loss = loss + tf.add_n(self.network.losses)
            # Replicas' gradients are summed: each contributes its share of the global mean.
            scaled = scale_for_replicas(loss)
        grads = tape.gradient(scaled, self.network.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.network.trainable_variables))
        self.loss_tracker.update_state(loss)
        self.noisy_accuracy_tracker.update_state(y, logits)
        return {"loss": self.loss_tracker.result(),
                "noisy_accuracy": self.noisy_accuracy_tracker.result()}

    def test_step(self, data):
        x, y = _unpack(data)
        clean_logits = self.network(x, training=False)
        noisy_logits = self.network(self.add_noise(x), training=False)
        self.loss_tracker.update_state(self.compute_member_loss(x, clean_logits, y))
        self.accuracy_tracker.update_state(y, clean_logits)
        self.noisy_accuracy_tracker.update_state(y, noisy_logits)
        return {m.name: m.result() for m in self.metrics}


def _unpack(data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError("sample weights are not supported by CEAR trainers")
    return x, y


def distillation_loss(teacher_logits, student_logits, temperature: float):
    """CE(softmax(teacher/T), softmax(student/T)) * T^2, averaged over the batch.

    The T^2 factor keeps gradient magnitudes comparable across temperatures
    (Hinton et al. 2015), so one learning rate serves the ensemble's T = 2..6.
    """
    t = tf.cast(temperature, student_logits.dtype)
    soft_targets = tf.nn.softmax(tf.cast(teacher_logits, student_logits.dtype) / t, axis=-1)
    log_probs = tf.nn.log_softmax(student_logits / t, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(soft_targets * log_probs, axis=-1)) * t * t


class _Untracked:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class Distiller(NoisyInputTrainer):
    """CEAR student: distillation with temperature scaling (DTS) on VGA-noised inputs.

    train_step: the teacher sees the *clean* batch, the student the *noisy* one
    (x + N(0, sigma_i^2 I), drawn per batch); loss =
      (1 - w) * CE(softmax(f_t(x)/T), softmax(f_s(x')/T)) * T^2 + w * CE(y, softmax(f_s(x'))),
    with w = `hard_label_weight` (0 by default: pure soft labels, as in the paper).

    `teacher` is any callable from images to logits (a Keras model or a loaded
    SavedModel's signature); it is not trained and not saved with the student.
    """

    def __init__(
        self,
        network: keras.Model,
        teacher: Callable[[tf.Tensor], tf.Tensor],
        temperature: float,
        sigma: float,
        hard_label_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(network, sigma, **kwargs)
        if temperature < 1:
            raise ValueError(f"temperature must be >= 1, got {temperature}")
        if not 0.0 <= hard_label_weight <= 1.0:
            raise ValueError(f"hard_label_weight must be in [0, 1], got {hard_label_weight}")
        # Held in a plain object, which Keras does not track (it does track lists): the
        # teacher's weights are neither trained nor written into the student's checkpoints.
        self._teacher_holder = _Untracked(teacher)
        self.temperature = float(temperature)
        self.hard_label_weight = float(hard_label_weight)

    @property
    def teacher(self):
        return self._teacher_holder.value

    def compute_member_loss(self, x_clean, logits, y):
        teacher_logits = tf.stop_gradient(self.teacher(x_clean))
        loss = distillation_loss(teacher_logits, logits, self.temperature)
        if self.hard_label_weight > 0:
            hard = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            loss = (1.0 - self.hard_label_weight) * loss + self.hard_label_weight * hard
        return loss
