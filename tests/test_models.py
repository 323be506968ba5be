import numpy as np
import pytest
import tensorflow as tf

from cear_tf import models


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _cifar_resnet_params(n, k=10):
    # Closed form for option-A CIFAR ResNets: stem, 3 stages of n basic blocks, dense.
    stem = 3 * 3 * 3 * 16 + 2 * 16
    s1 = n * (2 * 9 * 16 * 16 + 4 * 16)
    s2 = 9 * 16 * 32 + 9 * 32 * 32 + 4 * 32 + (n - 1) * (2 * 9 * 32 * 32 + 4 * 32)
    s3 = 9 * 32 * 64 + 9 * 64 * 64 + 4 * 64 + (n - 1) * (2 * 9 * 64 * 64 + 4 * 64)
    return stem + s1 + s2 + s3 + 64 * k + k


@pytest.mark.parametrize("name,shape,k,expected", [
    ("lenet5", (28, 28, 1), 10, 61706),            # classic LeNet-5 count
    ("released_mnist_cnn", (28, 28, 1), 10, 232778),  # the released code's MNIST CNN
    # conv 20 (520) + conv 50 (25,050) + dense 800->500 (400,500) + dense 500->10 (5,010)
    ("literature_lenet", (28, 28, 1), 10, 431080),
    ("resnet20", (32, 32, 3), 10, 269722),         # He et al.: 0.27M
    ("resnet110", (32, 32, 3), 10, 1727962),       # He et al.: 1.7M
    ("resnet18", (64, 64, 3), 200, 11271432),      # torchvision 11,689,512 less 7x7 stem/1000-way fc
])
def test_parameter_counts_match_published(name, shape, k, expected):
    model = models.build_model(name, shape, k)
    assert _trainable(model) == expected
    out = model(np.zeros((2, *shape), np.float32))
    assert out.shape == (2, k)


@pytest.mark.parametrize("depth", [32, 44, 56])
def test_cifar_family_counts(depth):
    model = models.build_model(f"resnet{depth}", (32, 32, 3), 10)
    assert _trainable(model) == _cifar_resnet_params((depth - 2) // 6)
    # Published rounded counts: 0.46M, 0.66M, 0.85M.
    assert round(_trainable(model) / 1e6, 2) == {32: 0.46, 44: 0.66, 56: 0.85}[depth]


def test_outputs_are_logits_not_probabilities(rng):
    model = models.build_model("lenet5", (28, 28, 1), 10)
    out = model(rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)).numpy()
    assert out.shape == (4, 10)
    assert not np.allclose(out.sum(axis=1), 1.0) or (out < 0).any()


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="vgg16", input_shape=(32, 32, 3), num_classes=10), "lenet5, resnet20"),
    (dict(name="lenet5", input_shape=(28, 28), num_classes=10), "input_shape"),
    (dict(name="lenet5", input_shape=(1, 28, 28, 1), num_classes=10), "input_shape"),
    (dict(name="lenet5", input_shape=(28, 28, 1), num_classes=1), "num_classes"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build_model(**kwargs)


def test_gradient_step_changes_weights(rng):
    model = models.build_model("resnet20", (32, 32, 3), 10)
    x = rng.uniform(size=(4, 32, 32, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    before = [w.numpy().copy() for w in model.trainable_weights]
    opt = tf.keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, model(x, training=True), from_logits=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)
    opt.apply_gradients(zip(grads, model.trainable_weights))
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed)


def test_normalization_is_inside_the_model(rng, tmp_path):
    model = models.build_model("lenet5", (28, 28, 1), 10, normalization=((0.5,), (0.25,)))
    x = rng.uniform(size=(3, 28, 28, 1)).astype(np.float32)
    plain = models.build_model("lenet5", (28, 28, 1), 10)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model(x).numpy(), plain((x - 0.5) / 0.25).numpy(), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        models.build_model("lenet5", (28, 28, 1), 10, normalization=((0.5, 0.5), (1.0, 1.0)))


@pytest.mark.parametrize("name,shape", [("lenet5", (28, 28, 1)), ("resnet20", (32, 32, 3))])
def test_keras_save_load_round_trip(name, shape, rng, tmp_path):
    model = models.build_model(name, shape, 10, normalization=((0.4,) * shape[-1], (0.2,) * shape[-1]))
    x = rng.uniform(size=(5, *shape)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_array_equal(model(x).numpy(), loaded(x).numpy())
