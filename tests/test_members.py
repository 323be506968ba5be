"""Members made by other tools: any SavedModel with the SPEC signature certifies."""

import numpy as np
import pytest
import tensorflow as tf

from cear_tf import members


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
