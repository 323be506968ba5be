"""Keras model builders for CEAR: every model maps float32 images in [0, 1] to logits.

`build_model(name, input_shape, num_classes)` is the one entry point; it returns an
uncompiled `keras.Model` with no softmax at the end (the certify engine and the
distillation loss both need raw logits, and a softmax layer would make temperature
scaling a no-op on saturated outputs).
"""

from .builders import (
    MODEL_NAMES,
    ChannelNormalization,
    build_model,
)

__all__ = ["MODEL_NAMES", "ChannelNormalization", "build_model"]
