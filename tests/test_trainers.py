import keras
import numpy as np
import pytest
import tensorflow as tf

from cear_tf import models
from cear_tf.training import trainers


class _Recorder(keras.layers.Layer):
    """Stores the last input it saw, to observe the noise a trainer adds."""

    def build(self, shape):
        self.seen = self.add_weight(shape=(4, 28, 28, 1), initializer="zeros", trainable=False,
                                    name="seen")

    def call(self, x):
        self.seen.assign(x)
        return x


def _recording_network():
    inputs = keras.Input((28, 28, 1))
    rec = _Recorder()
    x = rec(inputs)
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    return keras.Model(inputs, logits), rec


def test_noise_is_fresh_per_batch_in_train_step():
    network, rec = _recording_network()
    teacher = models.build_model("lenet5", (28, 28, 1), 10)
    trainer = trainers.Distiller(network, teacher, temperature=3.0, sigma=0.5, seed=7)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    x = np.full((4, 28, 28, 1), 0.5, np.float32)
    y = np.zeros(4, np.int64)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(2)
    seen = []
    for batch in ds:
        trainer.train_on_batch(*batch)
        seen.append(rec.seen.numpy().copy())
    noise1, noise2 = seen[0] - x, seen[1] - x
    assert not np.allclose(noise1, noise2)
    # Gaussian at sigma 0.5: 3136 values per batch, std within a few percent.
    for n in (noise1, noise2):
        assert abs(n.std() - 0.5) < 0.03 and abs(n.mean()) < 0.03


def test_per_example_noise_scales_lie_in_range():
    network, rec = _recording_network()
    trainer = trainers.NoisyInputTrainer(network, sigma=0.5, noise_mode="per_example",
                                         sigma_range=(0.25, 0.75), seed=1)
    x = np.zeros((4, 28, 28, 1), np.float32)
    stds = []
    for step in range(20):
        key = trainer.noise_keys.train(step)
        stds.extend(trainer.add_noise(x, key).numpy().reshape(4, -1).std(axis=1))
    stds = np.asarray(stds)
    assert stds.min() > 0.25 * 0.93 and stds.max() < 0.75 * 1.07
    assert stds.std() > 0.08  # different inputs draw different scales


def test_distillation_loss_hand_computed():
    teacher = np.array([[2.0, 0.0, -2.0]])
    student = np.array([[0.0, 1.0, 0.0]])
    t = 2.0
    # softmax([1, 0, -1]) and log_softmax([0, .5, 0]) by hand.
    p = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
    log_q = np.array([0.0, 0.5, 0.0]) - np.log(np.exp([0.0, 0.5, 0.0]).sum())
    expected = -(p * log_q).sum() * t * t
    got = trainers.distillation_loss(tf.constant(teacher, tf.float32),
                                     tf.constant(student, tf.float32), t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # p = [.66524, .24473, .09003], log q = [-1.29437, -.79437, -1.29437]: CE 1.17201, x T^2.
    assert expected == pytest.approx(4.6881, abs=1e-4)


def test_distiller_loss_uses_clean_teacher_input_and_hard_weight():
    calls = []

    def teacher(x):
        calls.append(x)
        return tf.constant([[2.0, 0.0, -2.0]]) + 0.0 * tf.reduce_sum(x)

    network = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(3)])
    d = trainers.Distiller(network, teacher, temperature=2.0, sigma=0.25, hard_label_weight=0.25)
    x = np.ones((1, 28, 28, 1), np.float32)
    logits = tf.constant([[0.0, 1.0, 0.0]])
    y = np.array([1])
    loss = float(d.compute_member_loss(x, logits, y))
    soft = float(trainers.distillation_loss(tf.constant([[2.0, 0.0, -2.0]]), logits, 2.0))
    hard = -np.log(np.exp(1.0) / (2 + np.exp(1.0)))
    assert loss == pytest.approx(0.75 * soft + 0.25 * hard, rel=1e-6)
    np.testing.assert_array_equal(calls[0], x)  # the teacher saw the clean batch


def test_teacher_weights_are_not_part_of_the_student():
    teacher = models.build_model("lenet5", (28, 28, 1), 10)
    network = models.build_model("lenet5", (28, 28, 1), 10)
    d = trainers.Distiller(network, teacher, 3.0, 0.25)
    d(np.zeros((1, 28, 28, 1), np.float32))
    ids = {id(w) for w in d.weights}
    assert not ids & {id(w) for w in teacher.weights}
    assert {id(w) for w in network.weights} <= ids


def test_vga_sigma_reproducible_and_in_range():
    draws = [trainers.vga_sigma(0.5, seed) for seed in range(500)]
    assert draws == [trainers.vga_sigma(0.5, seed) for seed in range(500)]
    assert min(draws) >= 0.25 and max(draws) <= 0.75
    # Uniform on [0.25, 0.75]: mean 0.5, std 0.1443; 500 draws.
    assert abs(np.mean(draws) - 0.5) < 0.02 and abs(np.std(draws) - 0.1443) < 0.015
    assert len(set(draws)) == 500


@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.5, sigma=0.25), "temperature"),
    (dict(temperature=2.0, sigma=-0.1), "sigma"),
    (dict(temperature=2.0, sigma=0.25, hard_label_weight=2.0), "hard_label_weight"),
])
def test_distiller_rejects_bad_parameters(kwargs, match):
    net = models.build_model("lenet5", (28, 28, 1), 10)
    with pytest.raises(ValueError, match=match):
        trainers.Distiller(net, net, **kwargs)
    with pytest.raises(ValueError, match="sigma"):
        trainers.vga_sigma(0.0, 1)


def test_training_noise_is_a_function_of_seed_and_step_only():
    # The draws of step t do not depend on what ran before (a resumed run draws the same),
    # differ between steps and seeds, and evaluation noise is keyed by the batch.
    network, _ = _recording_network()
    x = np.zeros((4, 28, 28, 1), np.float32)

    def draw(seed, step):
        trainer = trainers.NoisyInputTrainer(network, sigma=0.5, seed=seed)
        return trainer.add_noise(x, trainer.noise_keys.train(step)).numpy()

    first = draw(1, 7)
    for step in range(3):  # other draws in between change nothing
        draw(1, step)
    np.testing.assert_array_equal(first, draw(1, 7))
    assert not np.allclose(first, draw(1, 8)) and not np.allclose(first, draw(2, 7))
    keys = trainers.StepNoiseKeys(1)
    a, b = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(keys.evaluation(5, a), keys.evaluation(5, a))
    assert not np.array_equal(keys.evaluation(5, a), keys.evaluation(5, b))
    assert not np.array_equal(keys.evaluation(5, a), keys.evaluation(6, a))


def test_collapse_streaks_travel_with_the_checkpoint(tmp_path):
    # A run killed after two epochs at chance level and resumed stops where the
    # uninterrupted run would: after the third (patience 3), not after the fifth.
    class Model:
        stop_training = False

    low = {"val_accuracy": 0.1, "val_noisy_accuracy": 0.1}
    first = trainers.CollapseGuard("m", 0.1, patience=3, ckpt_dir=str(tmp_path))
    first.set_model(Model())
    for epoch in range(2):
        first.on_epoch_end(epoch, low)
    assert first.streaks == [2] and not first.model.stop_training
    resumed = trainers.CollapseGuard("m", 0.1, patience=3, ckpt_dir=str(tmp_path),
                                     finished_epochs=2)
    resumed.set_model(Model())
    assert resumed.streaks == [2]
    resumed.on_epoch_end(2, low)
    assert resumed.model.stop_training
    # A checkpoint of another epoch count (the streaks file outran it) starts from zero.
    other = trainers.CollapseGuard("m", 0.1, patience=3, ckpt_dir=str(tmp_path),
                                   finished_epochs=1)
    assert other.streaks == [0]
