"""Model registry, input checks and the in-model normalisation layer."""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np

from . import lenet, released, resnet_cifar, resnet_imagenet


@keras.saving.register_keras_serializable(package="cear_tf")
class ChannelNormalization(keras.layers.Layer):
    """(x - mean) / std per channel, with constants stored in the model.

    Kept inside the model so that a SavedModel takes pixels in [0, 1], which is the
    contract the certify engine relies on: smoothing noise is added in pixel space,
    before normalisation, exactly as in Cohen et al.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive per channel, got {self.std}")

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise ValueError(
                f"ChannelNormalization has {len(self.mean)} channels but the input has "
                f"{input_shape[-1]}"
            )

    def call(self, inputs):
        mean = np.asarray(self.mean, dtype="float32")
        inv_std = 1.0 / np.asarray(self.std, dtype="float32")
        return (inputs - mean) * inv_std

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


def _cifar_resnet(depth: int) -> Callable[..., keras.Model]:
    def build(inputs, num_classes):
        return resnet_cifar.resnet_cifar(inputs, depth=depth, num_classes=num_classes)

    return build


_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "lenet5": lenet.lenet5,
    "resnet20": _cifar_resnet(20),
    "resnet32": _cifar_resnet(32),
    "resnet44": _cifar_resnet(44),
    "resnet56": _cifar_resnet(56),
    "resnet110": _cifar_resnet(110),
    "resnet18": resnet_imagenet.resnet18,
    # The authors' released MNIST network (not the paper's LeNet-5): a reproduction option.
    "released_mnist_cnn": released.released_mnist_cnn,
    # The randomized-smoothing literature's MNIST baseline network (Jeong & Shin 2020, ...).
    "literature_lenet": lenet.literature_lenet,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> keras.Model:
    """Builds an uncompiled Keras model `name` mapping [B, H, W, C] in [0, 1] to logits [B, K].

    Args:
      name: one of MODEL_NAMES.
      input_shape: (H, W, C) of one image, without the batch dimension.
      num_classes: K >= 2.
      normalization: optional (mean, std) per channel, applied inside the model.

    Raises:
      ValueError: unknown name, input_shape not of rank 3 with positive sizes, or K < 2.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) with positive integer sizes, "
            f"got {input_shape!r}"
        )
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    inputs = keras.Input(shape=shape, dtype="float32", name="images")
    x = inputs
    if normalization is not None:
        mean, std = normalization
        x = ChannelNormalization(mean, std, name="normalize")(x)
    logits = _BUILDERS[name](x, int(num_classes))
    return keras.Model(inputs, logits, name=name)
