"""CIFAR ResNets of He et al. 2016 (section 4.2): depth 6n+2, three stages of 16/32/64 filters.

Basic blocks (two 3x3 convs), batch norm after every conv, global average pooling and a
dense layer. Shortcuts are option A of the paper: identity, with stride-2 subsampling and
zero-padded channels where the stage changes, so the shortcut adds no parameters. This
gives the published parameter counts: ResNet-20 0.27M (269,722), ResNet-110 1.7M
(1,727,962) trainable parameters for 10 classes.
"""

import keras
from keras import layers, ops

_KERNEL_INIT = "he_normal"


def _pad_shortcut(x, out_channels: int):
    """Option A shortcut: subsample spatially by 2 and zero-pad the new channels."""
    in_channels = x.shape[-1]
    extra = out_channels - in_channels
    x = x[:, ::2, ::2, :]
    return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])


@keras.saving.register_keras_serializable(package="cear_tf")
class ZeroPadShortcut(layers.Layer):
    """Parameter-free projection shortcut (option A)."""

    def __init__(self, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)

    def call(self, inputs):
        return _pad_shortcut(inputs, self.out_channels)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        half = lambda d: None if d is None else (d + 1) // 2  # noqa: E731
        return (b, half(h), half(w), self.out_channels)

    def get_config(self):
        config = super().get_config()
        config["out_channels"] = self.out_channels
        return config


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer=_KERNEL_INIT, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer=_KERNEL_INIT, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = ZeroPadShortcut(filters, name=f"{name}_shortcut")(x)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet_cifar(inputs, depth: int, num_classes: int):
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    blocks_per_stage = (depth - 2) // 6
    x = layers.Conv2D(16, 3, padding="same", use_bias=False,
                      kernel_initializer=_KERNEL_INIT, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, name=f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(num_classes, name="logits")(x)
