"""Reduced-precision inference for member forward passes, chosen by flag.

Members are SavedModels with float32 signatures, so precision cannot be chosen by a Keras
dtype policy at load time. Instead TensorFlow's graph rewriter (grappler) converts the
traced sampling graph, SavedModel calls included, where a numerically safe kernel exists:

  float32          no rewrite (the default; every published number is float32).
  mixed_bfloat16   oneDNN bfloat16 rewrite of CPU graphs. Native on CPUs with AVX512_BF16
                   or AMX (where it should pay; not measured here); elsewhere oneDNN
                   emulates it (measured on AVX-512 without bf16: 0.98-1.04x float32).
  mixed_float16    float16 rewrite of GPU graphs (tensor cores); needs a visible GPU.

The rewrite changes the base classifier's arithmetic, hence possibly a vote near a decision
boundary; the certificate is still valid for the classifier that was actually sampled (the
guarantee does not depend on how F is computed), but it is not bit-identical to float32, so
certify logs record the precision and refuse to resume across it.

The setting is process-wide and applies to graphs traced after it is set: set it before
building the engine.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from cear_tf.config.choices import PRECISIONS

_REWRITERS = {
    "mixed_bfloat16": "auto_mixed_precision_onednn_bfloat16",
    "mixed_float16": "auto_mixed_precision",
}


def cpu_has_native_bfloat16() -> bool:
    """True where /proc/cpuinfo lists avx512_bf16 or amx_bf16 (Linux); False otherwise."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def check_precision(name: str, flag: str = "--precision") -> None:
    """Raises ValueError, naming `flag`, when `name` is unknown or cannot run here."""
    if name not in PRECISIONS:
        raise ValueError(f"{flag}: unknown precision {name!r}; allowed: {', '.join(PRECISIONS)}")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mixed_float16" and not gpus:
        raise ValueError(f"{flag}=mixed_float16 rewrites GPU graphs but no GPU is visible; "
                         f"use mixed_bfloat16 on a CPU")
    if name == "mixed_bfloat16" and gpus:
        raise ValueError(f"{flag}=mixed_bfloat16 rewrites CPU (oneDNN) graphs, but members run "
                         f"on the visible GPU; use mixed_float16 there")
    if name == "mixed_bfloat16" and os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        raise ValueError(f"{flag}=mixed_bfloat16 needs oneDNN, but TF_ENABLE_ONEDNN_OPTS=0 "
                         f"turns it off")
    if name == "mixed_bfloat16" and not cpu_has_native_bfloat16():
        logging.warning("%s=mixed_bfloat16: this CPU has no AVX512_BF16/AMX; oneDNN emulates "
                        "bfloat16 and it will likely be slower than float32", flag)


def set_inference_precision(name: str, flag: str = "--precision") -> None:
    """Turns the graph rewrite for `name` on (and the others off) for graphs traced next."""
    check_precision(name, flag)
    tf.config.optimizer.set_experimental_options(
        {option: precision == name for precision, option in _REWRITERS.items()})
