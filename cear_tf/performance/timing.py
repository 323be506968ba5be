"""Timing in one process: the CPU's features, FLOPs of a network, the measured matmul peak,
and functions timed in turn (A B ... A B ...) so that load changes hit all alike.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def count_flops(model) -> int:
    """Multiply-adds x 2 of the convolutions and dense layers for one image."""
    import keras
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            flops += 2 * h * w * c_out * kh * kw * c_in
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return int(flops)


def matmul_peak(seconds: float = 2.0, n: int = 2048) -> float:
    """Measured float32 FLOP/s of a large square matmul in this process."""
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        f(a, b).numpy()
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def interleaved_seconds(functions, x, repeats: int, calls: int) -> dict[str, list[float]]:
    """{name: seconds per `calls` calls of functions[name](x), one entry per repeat}, the
    functions run in turn within each repeat (A B ... A B ...)."""
    seconds = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            for _ in range(calls):
                f(x).numpy()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def stats(values, digits=2):
    v = np.asarray(values, float)
    return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}-{v.max():.{digits}f})"
