"""Keras trainers for CEAR members: Gaussian-augmented training and the DTS/VGA Distiller.

Both are `keras.Model` subclasses that wrap the network being trained and override
`train_step`/`test_step` (the pattern of keras-io's knowledge-distillation example), so
`fit`, callbacks, checkpoints and tf.distribute work unchanged.

Noise is drawn inside `train_step`, fresh for every batch of every epoch (never a fixed
noisy copy of the data set), from a stateless key that is a function of (member seed, training
step) only: the step is the optimizer's iteration count, which checkpoints restore, so a run
resumed at an epoch boundary draws exactly what the uninterrupted run would have drawn
(TRAINING_DRAWS). Evaluation noise is keyed by (member seed, step, batch of the evaluation).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from cear_tf.common.distribute import replica_seed, scale_for_replicas
from cear_tf.config.choices import NOISE_MODES, STUDENT_LOSSES, VGA_RULES
from cear_tf.models.fused import stack_member_inputs

# Separate streams derived from a member's seed, so the VGA draw does not depend on how
# many random numbers initialisation or shuffling consumed.
_VGA_STREAM = 0x5647  # "VG"
_NOISE_STREAM = 0x4E53  # "NS"
_EVAL_STREAM = 0x4556  # "EV"
# How a training run draws its randomness (recorded with its checkpoints and members): a
# checkpoint made under another scheme cannot be continued draw for draw.
TRAINING_DRAWS = "stateless: batches by (seed, epoch), noise by (seed, step, draw)"


def derived_seed(stream: int, seed: int) -> int:
    """An int seed for one purpose (`stream`) of a member with seed `seed`."""
    return int(np.random.default_rng([stream, int(seed)]).integers(2**31 - 1))


def vga_sigma(base_sigma: float, seed: int, rule: str = "uniform",
              temperature: float | None = None) -> float:
    """VGA training sigma sigma_tr + beta, drawn once per member from its own seed.

    rule="uniform" (the paper's eq. 1-2, the default): beta ~ U(-sigma_tr/2, +sigma_tr/2),
    so sigma_i lies in [sigma_tr/2, 3 sigma_tr/2].
    The released code draws |beta| unseeded and picks its sign by the member:
      "released_mnist" (MNIST/TrainMnist.py): |beta| ~ U(0, sigma_tr/2), minus for T = 3, 6
        (T % 3 == 0), plus otherwise; T = 1 trains at sigma_tr.
      "released_cifar" (CIFAR10/TrainDDCifar10.py, TinyImageNet): |beta| ~ U(0, sigma_tr/3)
        by model number n = T - 1 (T = 2..6 <-> n = 1..5): n = 1 trains at sigma_tr, minus
        for n % 3 == 0 or n % 4 == 0 (T = 4, 5), plus otherwise (T = 3, 6).
    Both round |beta| to 3 decimals, as the released code does.
    """
    if base_sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {base_sigma}")
    if rule not in VGA_RULES:
        raise ValueError(f"VGA rule must be one of {', '.join(VGA_RULES)}, got {rule!r}")
    rng = np.random.default_rng([_VGA_STREAM, int(seed)])
    if rule == "uniform":
        return float(base_sigma + rng.uniform(-base_sigma / 2, base_sigma / 2))
    if temperature is None:
        raise ValueError(f"the {rule} VGA rule needs the member's temperature")
    t = int(round(temperature))
    if rule == "released_mnist":
        if t == 1:
            return float(base_sigma)
        sign = -1.0 if t % 3 == 0 else 1.0
        return float(base_sigma + sign * round(rng.uniform(0, base_sigma / 2), 3))
    n = t - 1
    if n == 1:
        return float(base_sigma)
    sign = -1.0 if n % 3 == 0 or n % 4 == 0 else 1.0
    return float(base_sigma + sign * round(rng.uniform(0, base_sigma / 3), 3))


class StepNoiseKeys:
    """The stateless keys of a member's training and evaluation noise.

    Training step t (the optimizer's iteration count, which a checkpoint restores) draws from
    key(seed, t). An evaluation batch at step t draws from key(seed, t, digest of the batch's
    pixels), so the same batch gets the same noise whatever ran before in the process. Folded
    with the replica id under a distribution strategy, so replicas draw their own noise.
    Nothing here is state a checkpoint must hold.
    """

    def __init__(self, seed: int):
        self.train_key = tf.constant([derived_seed(_NOISE_STREAM, seed), 0], tf.int64)
        self.eval_key = tf.constant([derived_seed(_EVAL_STREAM, seed), 0], tf.int64)

    def train(self, step) -> tf.Tensor:
        fold = tf.random.experimental.stateless_fold_in
        return replica_seed(fold(self.train_key, tf.cast(step, tf.int64)))

    def evaluation(self, step, images) -> tf.Tensor:
        fold = tf.random.experimental.stateless_fold_in
        key = fold(fold(self.eval_key, tf.cast(step, tf.int64)), _digest(images))
        return replica_seed(key)


def _digest(images: tf.Tensor) -> tf.Tensor:
    """An int64 that tells batches apart: a weighted sum of the bit patterns of their first
    pixels (deterministic; two batches collide only if those pixels agree)."""
    flat = tf.reshape(images, [-1])[:256]
    bits = tf.cast(tf.bitcast(tf.cast(flat, tf.float32), tf.int32), tf.int64)
    weights = tf.range(1, tf.size(bits, out_type=tf.int64) + 1, dtype=tf.int64)
    return tf.reduce_sum(bits * weights) + tf.cast(tf.shape(images)[0], tf.int64)


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
        clip: bool = False,
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
        self.clip = bool(clip)
        self.noise_keys = StepNoiseKeys(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.noisy_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="noisy_accuracy")

    # -- noise ---------------------------------------------------------------------------

    def add_noise(self, x, key):
        """x + noise at this member's training sigma drawn from the stateless `key` (clipped
        to [0, 1] with `clip`, the released code's choice)."""
        if self.noise_mode == "per_example":
            low, high = self.sigma_range
            batch = tf.shape(x)[0]
            scale = tf.random.stateless_uniform(
                (batch, 1, 1, 1), tf.random.experimental.stateless_fold_in(key, 1), low, high,
                dtype=x.dtype)
        elif self.sigma == 0.0:
            return x
        else:
            scale = tf.cast(self.sigma, x.dtype)
        noisy = x + scale * tf.random.stateless_normal(tf.shape(x), key, dtype=x.dtype)
        return tf.clip_by_value(noisy, 0.0, 1.0) if self.clip else noisy

    def clean_and_noisy(self, x):
        """(clean, noisy) batch: a batch [B, 2, H, W, C] holds a fixed noisy copy beside each
        image (`fixed_noisy_copy`); otherwise the noise of this training step is drawn now."""
        if x.shape.rank == 5:
            return x[:, 0], x[:, 1]
        return x, self.add_noise(x, self.noise_keys.train(self.optimizer.iterations))

    # -- keras.Model API -------------------------------------------------------------------

    def call(self, x, training=False):
        return self.network(x, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker, self.noisy_accuracy_tracker]

    def compute_member_loss(self, x_clean, logits, y, teacher_logits=None):
        del x_clean, teacher_logits
        return tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))

    def train_step(self, data):
        x, y = _unpack(data)
        x, teacher_logits = split_teacher_logits(x)
        x, noisy = self.clean_and_noisy(x)
        with tf.GradientTape() as tape:
            logits = self.network(noisy, training=True)
            loss = self.compute_member_loss(x, logits, y, teacher_logits)
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
        key = self.noise_keys.evaluation(self.optimizer.iterations, x)
        noisy_logits = self.network(self.add_noise(x, key), training=False)
        self.loss_tracker.update_state(self.compute_member_loss(x, clean_logits, y))
        self.accuracy_tracker.update_state(y, clean_logits)
        self.noisy_accuracy_tracker.update_state(y, noisy_logits)
        return {m.name: m.result() for m in self.metrics}


def _unpack(data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if sample_weight is not None:
        raise ValueError("sample weights are not supported by CEAR trainers")
    return x, y


def split_teacher_logits(x):
    """(images, teacher logits or None) of a batch's inputs: a student's training batches may
    carry its frozen teacher's logits on the clean images, computed once before training
    (training.teacher_logits) instead of at every step."""
    if isinstance(x, (tuple, list)):
        images, logits = x
        return images, logits
    return x, None


def fixed_noisy_copy(images: np.ndarray, sigma: float, seed: int, clip: bool) -> np.ndarray:
    """One noisy copy of a training set, drawn once from the member's seed (the released
    code's training data; cear_tf's default draws fresh noise per batch instead)."""
    rng = np.random.default_rng([_NOISE_STREAM, int(seed), 1])
    noisy = images + rng.standard_normal(images.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(noisy, 0.0, 1.0) if clip else noisy


def released_mnist_loss(teacher_logits, student_logits, temperature: float):
    """The released MNIST students' loss: CE(softmax(f_t(x)), softmax(softmax(f_s(x')) / T)),
    i.e. teacher targets at T = 1 and the student's *probabilities* divided by T, no T^2.
    (The released CIFAR-10/TinyImageNet loss, KL between p_t^(1/T) and p_s^(1/T) renormalised,
    times T^2, equals `distillation_loss` up to a constant: p^(1/T) renormalised is
    softmax(logits / T).)"""
    t = tf.cast(temperature, student_logits.dtype)
    targets = tf.nn.softmax(tf.cast(teacher_logits, student_logits.dtype), axis=-1)
    log_probs = tf.nn.log_softmax(tf.nn.softmax(student_logits, axis=-1) / t, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(targets * log_probs, axis=-1))


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
    SavedModel's signature); it is not trained and not saved with the student. Batches
    ((images, teacher_logits), labels) bring the teacher's logits on those clean images
    with them, and the teacher is then not called in train_step.
    """

    def __init__(
        self,
        network: keras.Model,
        teacher: Callable[[tf.Tensor], tf.Tensor],
        temperature: float,
        sigma: float,
        hard_label_weight: float = 0.0,
        student_loss: str = "hinton",
        **kwargs,
    ):
        super().__init__(network, sigma, **kwargs)
        if student_loss not in STUDENT_LOSSES:
            raise ValueError(f"student_loss must be one of {', '.join(STUDENT_LOSSES)}, "
                             f"got {student_loss!r}")
        self.student_loss = student_loss
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

    def compute_member_loss(self, x_clean, logits, y, teacher_logits=None):
        if teacher_logits is None:
            teacher_logits = self.teacher(x_clean)
        teacher_logits = tf.stop_gradient(teacher_logits)
        loss_fn = distillation_loss if self.student_loss == "hinton" else released_mnist_loss
        loss = loss_fn(teacher_logits, logits, self.temperature)
        if self.hard_label_weight > 0:
            hard = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            loss = (1.0 - self.hard_label_weight) * loss + self.hard_label_weight * hard
        return loss


class FusedEnsembleTrainer(keras.Model):
    """Trains M LeNet-5 members in one step as one fused network (models.fused).

    Each member keeps what separate training gives it: its own batches (the data set yields
    [B, M, H, W, C] images and [B, M] labels, member i's batch shuffled by its own seed), its
    own Gaussian noise at its own sigma_i, its own temperature T_i as a student (teacher on
    its clean batch, one teacher pass for all, or the batch's precomputed teacher logits
    [B, M, K] in ((images, teacher_logits), labels)), and its own gradient-norm clipping (each
    member's gradient is clipped to `clipnorm` on its own, as `global_clipnorm` does for one
    network). The loss is the sum of the members' losses; the members share no parameter, so
    each one's gradient is the one it would get alone.

    test_step takes plain [B, H, W, C] batches: every member sees the same clean images and
    its own noise; metrics `accuracy_<i>` and `noisy_accuracy_<i>` per member.
    """

    def __init__(self, network, sigmas, temperatures=None, teacher=None, clipnorm: float = 0.0,
                 seed: int = 0, clip: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        m = network.num_members
        if len(sigmas) != m:
            raise ValueError(f"{len(sigmas)} sigmas for {m} members")
        if temperatures is not None and (teacher is None or len(temperatures) != m):
            raise ValueError("students need a teacher and one temperature per member")
        self.sigmas = tf.constant(sigmas, tf.float32)
        self.temperatures = (tf.constant(temperatures, tf.float32)
                             if temperatures is not None else None)
        self._teacher_holder = _Untracked(teacher)
        self.clipnorm = float(clipnorm)
        self.clip = bool(clip)
        self.noise_keys = StepNoiseKeys(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_trackers = [keras.metrics.SparseCategoricalAccuracy(name=f"accuracy_{i}")
                                  for i in range(m)]
        self.noisy_trackers = [
            keras.metrics.SparseCategoricalAccuracy(name=f"noisy_accuracy_{i}") for i in range(m)]

    @property
    def metrics(self):
        return [self.loss_tracker, *self.accuracy_trackers, *self.noisy_trackers]

    def call(self, x, training=False):
        return self.network(x, training=training)

    def _noisy(self, images, key):
        """images [B, M, H, W, C] + N(0, sigma_i^2) per member, drawn from `key`."""
        noise = tf.random.stateless_normal(tf.shape(images), key)
        noisy = images + self.sigmas[None, :, None, None, None] * noise
        return tf.clip_by_value(noisy, 0.0, 1.0) if self.clip else noisy

    def _member_losses(self, images, logits, labels, teacher_logits=None):
        """[M] mean losses; logits [M, B, K], labels [B, M], images [B, M, H, W, C] clean,
        teacher_logits [B, M, K] on them (None: the teacher is called)."""
        if self.temperatures is None:
            ce = keras.losses.sparse_categorical_crossentropy(
                tf.transpose(labels), logits, from_logits=True)  # [M, B]
            return tf.reduce_mean(ce, axis=1)
        if teacher_logits is None:
            shape = tf.shape(images)
            flat = tf.reshape(images, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
            teacher_logits = tf.reshape(self._teacher_holder.value(flat),
                                        [shape[0], shape[1], -1])
        teacher = tf.transpose(tf.stop_gradient(teacher_logits), [1, 0, 2])
        t = self.temperatures[:, None, None]
        soft = tf.nn.softmax(tf.cast(teacher, logits.dtype) / t, axis=-1)
        log_probs = tf.nn.log_softmax(logits / t, axis=-1)
        return -tf.reduce_mean(tf.reduce_sum(soft * log_probs, axis=-1), axis=1) * \
            self.temperatures ** 2

    def train_step(self, data):
        images, labels = _unpack(data)
        images, teacher_logits = split_teacher_logits(images)
        noisy = self._noisy(images, self.noise_keys.train(self.optimizer.iterations))
        with tf.GradientTape() as tape:
            logits = self.network(stack_member_inputs(noisy), training=True)
            losses = self._member_losses(images, logits, labels, teacher_logits)
            total = tf.reduce_sum(losses)
        variables = self.network.trainable_variables
        grads = tape.gradient(total, variables)
        if self.clipnorm > 0:
            grads = self.network.clip_per_member(grads, self.clipnorm)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.loss_tracker.update_state(tf.reduce_mean(losses))
        for i, tracker in enumerate(self.noisy_trackers):
            tracker.update_state(labels[:, i], logits[i])
        return {m.name: m.result() for m in [self.loss_tracker, *self.noisy_trackers]}

    def test_step(self, data):
        x, y = _unpack(data)
        m = self.network.num_members
        copies = tf.repeat(x[:, None], m, axis=1)  # [B, M, H, W, C]
        clean = self.network(stack_member_inputs(copies), training=False)
        key = self.noise_keys.evaluation(self.optimizer.iterations, x)
        noisy = self.network(stack_member_inputs(self._noisy(copies, key)), training=False)
        for i in range(m):
            self.accuracy_trackers[i].update_state(y, clean[i])
            self.noisy_trackers[i].update_state(y, noisy[i])
        return {t.name: t.result() for t in [*self.accuracy_trackers, *self.noisy_trackers]}


class TrainingClock(keras.callbacks.Callback):
    """Training seconds summed over every run a checkpoint continues, so that a member
    resumed across sessions does not report only its last run's seconds. The running total
    is written next to the checkpoint at each epoch end; it must come after
    BackupAndRestore in the callback list, so that both record the same epoch. `earlier` is
    what the checkpoint's runs took before this one: None when unknown (a checkpoint made
    before the clock was, or a kill between the checkpoint and the clock's write)."""

    FILE = "train_seconds.json"

    def __init__(self, ckpt_dir: str, finished_epochs: int):
        super().__init__()
        self._path = os.path.join(ckpt_dir, self.FILE)
        self.earlier = 0.0 if finished_epochs == 0 else None
        try:
            with open(self._path, encoding="utf-8") as f:
                recorded = json.load(f)
            if int(recorded["epochs"]) == finished_epochs:
                self.earlier = float(recorded["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.earlier is None:
            return  # a total we cannot know is not written, so it is never taken as one
        record = {"epochs": epoch + 1, "seconds": self.earlier + time.time() - self._start}
        with open(self._path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(self._path + ".tmp", self._path)


class CollapseGuard(keras.callbacks.Callback):
    """Warns at every epoch end where a member's validation accuracy (clean or noisy) is at
    chance level, and stops training once every member has been there for `patience` epochs
    in a row: a LeNet-5 or ResNet whose ReLUs have all died does not recover, and a
    paper-scale member costs an hour. `members` names the members of a fused run, whose
    metrics end in _<i>; None means one network."""

    FILE = "collapse_streaks.json"

    def __init__(self, name: str, chance: float, patience: int, members=None,
                 factor: float = 1.5, ckpt_dir: str | None = None, finished_epochs: int = 0):
        super().__init__()
        self.factor = factor  # accuracy below factor x chance counts as collapsed
        self.groups = [(name, "")] if members is None else \
            [(m, f"_{i}") for i, m in enumerate(members)]
        self.chance, self.patience = chance, patience
        self.streaks = [0] * len(self.groups)
        # The streaks travel with the checkpoint (written after it, like the TrainingClock),
        # so a resumed run stops at the epoch the uninterrupted one would.
        self._path = os.path.join(ckpt_dir, self.FILE) if ckpt_dir else None
        if self._path and finished_epochs:
            try:
                with open(self._path, encoding="utf-8") as f:
                    recorded = json.load(f)
                if int(recorded["epochs"]) == finished_epochs and \
                        len(recorded["streaks"]) == len(self.streaks):
                    self.streaks = [int(v) for v in recorded["streaks"]]
            except (OSError, ValueError, KeyError, TypeError):
                pass

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for g, (name, suffix) in enumerate(self.groups):
            keys = [f"val_accuracy{suffix}", f"val_noisy_accuracy{suffix}"]
            accuracies = {k: float(logs[k]) for k in keys if k in logs}
            if not accuracies:  # no validation split: the noisy training accuracy
                key = f"noisy_accuracy{suffix}"
                accuracies = {key: float(logs[key])} if key in logs else {}
            low = {k: v for k, v in accuracies.items() if v < self.factor * self.chance}
            self.streaks[g] = self.streaks[g] + 1 if low else 0
            if low:
                logging.warning("%s, epoch %d: %s at chance level (most frequent class %.2f%%)",
                                name, epoch + 1,
                                ", ".join(f"{k} {100 * v:.2f}%" for k, v in sorted(low.items())),
                                100 * self.chance)
        if self._path:
            with open(self._path + ".tmp", "w", encoding="utf-8") as f:
                json.dump({"epochs": epoch + 1, "streaks": self.streaks}, f)
            os.replace(self._path + ".tmp", self._path)
        if self.patience and min(self.streaks) >= self.patience:
            logging.warning("%s: at chance level for %d epochs in a row: training stopped",
                            ", ".join(n for n, _ in self.groups), min(self.streaks))
            self.model.stop_training = True
