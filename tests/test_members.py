"""Members made by other tools: any SavedModel with the SPEC signature certifies."""

import os

import numpy as np
import pytest
import tensorflow as tf

from cear_tf.ensemble import members


class _Linear(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(tf.random.stateless_normal([28 * 28, 10], seed=[1, 2]))

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="x")])
    def serve(self, x):
        return {"output_0": tf.matmul(tf.reshape(x, [-1, 28 * 28]), self.w)}


def test_foreign_savedmodel_without_cear_json(tmp_path):
    module = _Linear()
    tf.saved_model.save(module, str(tmp_path / "foreign"), signatures={"serving_default": module.serve})
    m = members.load_member(str(tmp_path / "foreign"))
    assert m.metadata == {} and m.input_shape == (28, 28, 1) and m.num_classes == 10
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(m(tf.constant(x)).numpy(), module.serve(x)["output_0"].numpy(),
                               rtol=1e-5)


def test_bad_signatures_are_rejected(tmp_path):
    class TwoOut(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)])
        def serve(self, x):
            return {"a": tf.zeros([tf.shape(x)[0], 10]), "b": tf.zeros([tf.shape(x)[0], 10])}

    class IntIn(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.uint8)])
        def serve(self, x):
            return {"logits": tf.zeros([tf.shape(x)[0], 10])}

    for cls, match in ((TwoOut, "one tensor of logits"), (IntIn, "float32")):
        module = cls()
        path = str(tmp_path / cls.__name__)
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
        with pytest.raises(ValueError, match=match):
            members.load_member(path)
    module = _Linear()
    path = str(tmp_path / "nosig")
    tf.saved_model.save(module, path, signatures={"predict": module.serve})
    with pytest.raises(ValueError, match="no 'serving_default'"):
        members.load_member(path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot load SavedModel"):
        members.load_member(str(tmp_path / "broken"))


def test_frozen_member_matches_variables_and_has_input_gradients(tmp_path):
    """A ResNet-20 with non-trivial batch-norm statistics: frozen (the default) and
    variable-backed loading give the same logits and the same input gradients."""
    import keras

    from cear_tf import models
    keras.utils.set_random_seed(0)
    net = models.build_model("resnet20", (32, 32, 3), 10)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            rng = np.random.default_rng(len(gamma))
            layer.set_weights([gamma * rng.uniform(0.5, 1.5, gamma.shape), beta + 0.1,
                               mean + 0.1 * rng.standard_normal(mean.shape),
                               var * rng.uniform(0.5, 2.0, var.shape)])
    members.export_member(net, str(tmp_path / "m"), {"role": "test"})
    frozen = members.load_member(str(tmp_path / "m"))
    plain = members.load_member(str(tmp_path / "m"), frozen=False)
    x = tf.random.stateless_uniform([8, 32, 32, 3], [1, 2])
    a, b = frozen(x).numpy(), plain(x).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    np.testing.assert_allclose(a, net(x, training=False).numpy(), rtol=1e-4,
                               atol=1e-4 * np.abs(b).max())
    grads = []
    for member in (frozen, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(member(x)[:, 3])
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4 * np.abs(grads[1]).max())


def test_exported_member_reloads_as_a_keras_model(tmp_path):
    import keras

    from cear_tf import models
    net = models.build_model("lenet5", (28, 28, 1), 10, ((0.13,), (0.31,)))
    path = str(tmp_path / "m")
    members.export_member(net, path, {"arch": "lenet5"})
    reloaded = keras.saving.load_model(os.path.join(path, members.KERAS_FILE))
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(reloaded(x).numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)
    reloaded.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    reloaded.fit(x, np.array([1, 2, 3]), epochs=1, verbose=0)  # can be fine-tuned


def test_loaded_savedmodel_member_is_callable(tmp_path):
    import keras
    net = keras.Sequential([keras.Input((5, 5, 1)), keras.layers.Flatten(), keras.layers.Dense(4)])
    path = str(tmp_path / "m")
    members.export_member(net, path, {"role": "test"})
    loaded = tf.saved_model.load(path)
    x = np.random.default_rng(1).uniform(size=(2, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(tf.constant(x)).numpy(), net(x).numpy(), rtol=1e-6,
                               atol=1e-6)
    # The serving contract is unchanged.
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["logits"].numpy(), net(x).numpy(), rtol=1e-6, atol=1e-6)
    assert members.load_member(path).num_classes == 4
