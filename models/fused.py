"""M LeNet-5 networks (models.lenet) run as one network, for training or evaluating a whole
ensemble at the cost of one wider network.

Layout: the members' inputs are stacked along channels, member-major, [B, H, W, M * C];
conv1 and conv2 are grouped convolutions (`tf.nn.conv2d` with groups = M: member i's
filters only see member i's channels), pooling is per channel, and the dense layers are
batched matrix products over a leading member axis. Output: logits [M, B, K]. Member i of
the fused network computes exactly what the i-th LeNet-5 computes (up to float rounding),
so members are copied in with `from_networks` and out with `member_network`.

Grouped convolutions are called through `tf.nn.conv2d` directly: Keras'
`Conv2D(groups=...)` routes them through XLA on CPU, which was 2x (inference) to 20x
(training) slower on this machine (measured with cear_tf.cli.bench).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

# LeNet-5 layer names (models.lenet) and their fused weights.
_CONVS = (("c1", "SAME"), ("c3", "VALID"))
_DENSES = ("c5", "f6", "logits")


@keras.saving.register_keras_serializable(package="cear_tf")
class FusedLeNet5(keras.Model):
    """M LeNet-5 networks as one: [B, H, W, M * C] (member-major channels) -> [M, B, K]."""

    def __init__(self, num_members: int, input_shape: Sequence[int], num_classes: int,
                 normalization: tuple[Sequence[float], Sequence[float]] | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        self.num_members = int(num_members)
        self.image_shape = tuple(int(d) for d in input_shape)
        self.num_classes = int(num_classes)
        self.normalization = normalization
        h, w, c = self.image_shape
        m = self.num_members
        # Spatial size after conv1 (same) + pool, conv2 (valid 5x5) + pool.
        self.flat_hw = ((h // 2 - 4) // 2, (w // 2 - 4) // 2)
        flat = self.flat_hw[0] * self.flat_hw[1] * 16
        shapes = {"c1": (5, 5, c, 6 * m), "c3": (5, 5, 6, 16 * m),
                  "c5": (m, flat, 120), "f6": (m, 120, 84), "logits": (m, 84, num_classes)}
        self.kernels, self.biases = {}, {}
        for name, shape in shapes.items():
            self.kernels[name] = self.add_weight(name=f"{name}_kernel", shape=shape,
                                                 initializer="zeros")
            bias_shape = (shape[-1],) if name in ("c1", "c3") else (m, shape[-1])
            self.biases[name] = self.add_weight(name=f"{name}_bias", shape=bias_shape,
                                                initializer="zeros")
        if normalization is not None:
            mean, std = (np.asarray(v, np.float32) for v in normalization)
            self._shift, self._scale = mean, 1.0 / std
        else:
            self._shift = self._scale = None

    @classmethod
    def from_networks(cls, networks: Sequence[keras.Model]) -> "FusedLeNet5":
        """A fused network holding copies of these LeNet-5 networks' weights (built by
        models.build_model("lenet5", ...), with or without normalisation)."""
        first = networks[0]
        shape = tuple(first.input_shape[1:])
        norm = None
        names = [layer.name for layer in first.layers]
        if "normalize" in names:
            layer = first.get_layer("normalize")
            norm = (layer.mean, layer.std)
        fused = cls(len(networks), shape, int(first.output_shape[-1]), norm)
        fused.set_member_weights([_lenet_weights(n) for n in networks])
        return fused

    def set_member_weights(self, per_member: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]]):
        for name, _ in _CONVS:
            self.kernels[name].assign(np.concatenate([p[name][0] for p in per_member], -1))
            self.biases[name].assign(np.concatenate([p[name][1] for p in per_member], -1))
        for name in _DENSES:
            self.kernels[name].assign(np.stack([p[name][0] for p in per_member]))
            self.biases[name].assign(np.stack([p[name][1] for p in per_member]))

    def member_weights(self, i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for name, _ in _CONVS:
            k, b = self.kernels[name].numpy(), self.biases[name].numpy()
            n = k.shape[-1] // self.num_members
            out[name] = (k[..., i * n:(i + 1) * n], b[i * n:(i + 1) * n])
        for name in _DENSES:
            out[name] = (self.kernels[name].numpy()[i], self.biases[name].numpy()[i])
        return out

    def member_network(self, i: int, build) -> keras.Model:
        """Member i as a plain LeNet-5 Keras model; `build()` returns a fresh one (e.g.
        models.build_model("lenet5", shape, K, normalization))."""
        network = build()
        weights = self.member_weights(i)
        for name, (k, b) in weights.items():
            network.get_layer(name).set_weights([k, b])
        return network

    def clip_per_member(self, grads, clipnorm: float):
        """Gradients (in trainable_variables order) with each member's own norm clipped to
        `clipnorm`, as Keras' global_clipnorm does for one separately trained network."""
        m = self.num_members
        squares = tf.zeros([m])
        split = []
        for var, g in zip(self.trainable_variables, grads):
            if var.shape[0] == m and len(var.shape) in (2, 3):  # dense: leading member axis
                per = tf.reshape(g, [m, -1])
                split.append(("leading", g))
            else:  # conv kernel or bias: member-major last axis
                per = tf.transpose(tf.reshape(g, [-1, m, var.shape[-1] // m]), [1, 0, 2])
                per = tf.reshape(per, [m, -1])
                split.append(("last", g))
            squares += tf.reduce_sum(tf.square(per), axis=1)
        norms = tf.sqrt(squares)
        factors = clipnorm / tf.maximum(norms, clipnorm)  # 1 where the norm is within bounds
        out = []
        for (kind, g), var in zip(split, self.trainable_variables):
            if kind == "leading":
                out.append(g * tf.reshape(factors, [m] + [1] * (len(var.shape) - 1)))
            else:
                out.append(g * tf.repeat(factors, var.shape[-1] // m))
        return out

    def call(self, inputs, training=False):
        """inputs [B, H, W, M * C] (member i's image in channels i*C..(i+1)*C-1), or
        [B, H, W, C]: one image for every member, when their inputs are the same (conv1 is
        then one ordinary convolution with 6 M outputs)."""
        m = self.num_members
        x = inputs
        if self._shift is not None:
            copies = 1 if inputs.shape[-1] == self.image_shape[-1] else m
            x = (x - np.tile(self._shift, copies)) * np.tile(self._scale, copies)
        for name, padding in _CONVS:
            x = tf.nn.relu(tf.nn.conv2d(x, self.kernels[name], 1, padding) + self.biases[name])
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        batch = tf.shape(x)[0]
        fh, fw = self.flat_hw
        # [B, fh, fw, M * 16] -> [M, B, fh * fw * 16], each member's features in the order a
        # Keras Flatten of its own [B, fh, fw, 16] map gives.
        x = tf.reshape(x, [batch, fh, fw, m, 16])
        x = tf.reshape(tf.transpose(x, [3, 0, 1, 2, 4]), [m, batch, fh * fw * 16])
        for name in _DENSES:
            x = tf.matmul(x, self.kernels[name]) + self.biases[name][:, None, :]
            if name != "logits":
                x = tf.nn.relu(x)
        return x


def lenet_weights_from_saved_model(loaded) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A LeNet-5 member's weights from its loaded SavedModel (cear_tf's export keeps the
    Keras variable names, c1/kernel ... logits/bias)."""
    by_name = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    out = {}
    for name in [n for n, _ in _CONVS] + list(_DENSES):
        out[name] = (by_name[f"{name}/kernel"], by_name[f"{name}/bias"])
    return out


def stack_member_inputs(images: tf.Tensor) -> tf.Tensor:
    """[B, M, H, W, C] per-member images -> [B, H, W, M * C], member-major channels."""
    shape = tf.shape(images)
    x = tf.transpose(images, [0, 2, 3, 1, 4])
    return tf.reshape(x, [shape[0], shape[2], shape[3], shape[1] * shape[4]])


def _lenet_weights(network: keras.Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for name in [n for n, _ in _CONVS] + list(_DENSES):
        kernel, bias = network.get_layer(name).get_weights()
        out[name] = (kernel, bias)
    return out
