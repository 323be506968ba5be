"""Certification throughput (cear_tf.cli.bench): our engine against Cohen et al.'s loop as a
competent Keras user writes it and against a naive first attempt, fused against separate
members, at several batch sizes, and the input contract's cost; every variant once per
repeat, interleaved, with the matmul peak measured between them.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from cear_tf import models
from cear_tf.common.progress import Progress
from cear_tf.ensemble import members as members_lib
from cear_tf.ensemble import precision as precision_lib
from cear_tf.ensemble.loading import FusedMembers
from cear_tf.models.fused import FusedLeNet5
from cear_tf.performance.timing import count_flops, matmul_peak
from cear_tf.smoothing import aggregate, core, input_contract

# Certify batch and draws per architecture (a few seconds per measurement on 2 cores).
SETTINGS = {
    "lenet5": dict(shape=(28, 28, 1), batch=1000, draws=10000),
    "resnet20": dict(shape=(32, 32, 3), batch=500, draws=2000),
    "resnet110": dict(shape=(32, 32, 3), batch=200, draws=400),
    "resnet18": dict(shape=(64, 64, 3), batch=100, draws=200, classes=200),
}


AGGREGATIONS = ("mean", "mv", "rw", "gm")


def build_members(arch, m, shape, classes):
    out = []
    for i in range(m):
        tf.keras.utils.set_random_seed(i)
        out.append(models.build_model(arch, shape, classes))
    return out


def aggregators(m):
    return [aggregate.make_aggregator(a, m, weights=[1.0] * m if a == "rw" else None)
            for a in AGGREGATIONS]


def time_engine(smooth: "core.Smooth", x, draws, batch) -> float:
    smooth.sample_counts(x, batch, batch, idx=0)  # trace
    start = time.perf_counter()
    smooth.sample_counts(x, draws, batch, idx=1)
    return time.perf_counter() - start


def time_naive(members, aggregators_np, x, draws, batch, sigma=0.25) -> float:
    """Every aggregation separately: NumPy noise, model.predict per member."""
    rng = np.random.default_rng(0)
    members[0].predict(np.repeat(x[None], batch, 0), batch_size=batch, verbose=0)  # warm up
    start = time.perf_counter()
    for agg in aggregators_np:
        counts = np.zeros(members[0].output_shape[-1], np.int64)
        remaining = draws
        while remaining > 0:
            this = min(batch, remaining)
            noisy = x[None] + sigma * rng.standard_normal((this, *x.shape)).astype(np.float32)
            probs = np.stack([tf.nn.softmax(m.predict(noisy, batch_size=batch, verbose=0)).numpy()
                              for m in members])
            counts += np.bincount(agg(probs).argmax(1), minlength=len(counts))
            remaining -= this
    return time.perf_counter() - start


def keras_loop_functions(members, shape, batch):
    """Each member's softmax in a tf.function (one signature, so the last partial batch does
    not retrace), every member traced and warmed up once."""
    spec = tf.TensorSpec([None, *shape], tf.float32)
    fns = [tf.function(lambda b, net=net: tf.nn.softmax(net(b, training=False)),
                       input_signature=[spec]) for net in members]
    warm = tf.zeros([batch, *shape])
    for fn in fns:
        fn(warm).numpy()
    return fns


def time_keras_loop(fns, num_classes, aggregators_np, x, draws, batch, sigma=0.25) -> float:
    """Cohen et al.'s sampling loop as a competent Keras user writes it: the members'
    tf.functions (keras_loop_functions), one noise draw per batch shared by the members, and
    the member passes shared by all aggregations."""
    xt = tf.constant(x)
    start = time.perf_counter()
    counts = np.zeros((len(aggregators_np), num_classes), np.int64)
    remaining = draws
    while remaining > 0:
        this = min(batch, remaining)
        noisy = xt[None] + sigma * tf.random.normal([this, *x.shape])
        probs = np.stack([fn(noisy).numpy() for fn in fns])
        for j, agg in enumerate(aggregators_np):
            counts[j] += np.bincount(agg(probs).argmax(1), minlength=counts.shape[1])
        remaining -= this
    return time.perf_counter() - start


def numpy_aggregators(m):
    def gm(p):
        return aggregate.aggregate_geometric_median(tf.constant(p)).numpy()

    return [lambda p: p.mean(0),
            lambda p: np.stack([np.bincount(a, minlength=p.shape[-1]) for a in p.argmax(-1).T]),
            lambda p: np.tensordot(np.full(m, 1 / m), p, 1),
            gm]


def fused_engine(arch, members, classes, aggregators):
    """The engine on the members fused into one network (LeNet-5 only), or None."""
    if arch != "lenet5":
        return None
    fused = FusedMembers(FusedLeNet5.from_networks(members))
    frozen = [members_lib.freeze_keras(net) for net in members]
    return core.Smooth(frozen, classes, 0.25, aggregators, fused=fused)


def measure(arch, m, repeats, xla, precision="float32", draws=0, naive=True, extra_variants=None):
    """Every variant once per repeat, interleaved (A B C ... A B C ...), with the matmul peak
    measured between them: machine-load changes hit all variants alike, and each ratio is
    taken within one repeat. `extra_variants(members, x, draws, batch)` may add
    {name: timer} to the variants (benchmarks/pytorch_reference.py adds PyTorch)."""
    cfg = SETTINGS[arch]
    classes = cfg.get("classes", 10)
    shape, batch, draws = cfg["shape"], cfg["batch"], draws or cfg["draws"]
    members = build_members(arch, m, shape, classes)
    # The engine gets members frozen as cear_tf.cli.certify loads them; the Keras baselines keep
    # the Keras models (what users call).
    frozen = [members_lib.freeze_keras(net) for net in members]
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    engine_all = core.Smooth(frozen, classes, 0.25, aggregators(m), jit_compile=xla)
    engine_one = core.Smooth(frozen, classes, 0.25, aggregators(m)[:1], jit_compile=xla)
    fused_all = fused_engine(arch, members, classes, aggregators(m))
    fused_one = fused_engine(arch, members, classes, aggregators(m)[:1])
    engine_low = None
    if precision != "float32":
        # The rewrite is applied when a graph is first run: trace the float32 engine first,
        # then the reduced-precision one, then switch the rewrite off again.
        engine_one.sample_counts(x, batch, batch, idx=0)
        precision_lib.set_inference_precision(precision)
        engine_low = core.Smooth(frozen, classes, 0.25, aggregators(m)[:1], jit_compile=xla)
        engine_low.sample_counts(x, batch, batch, idx=0)
        precision_lib.set_inference_precision("float32")
    np_aggs = numpy_aggregators(m)
    keras_fns = keras_loop_functions(members, shape, batch)
    variants = {
        "engine_4agg_s": lambda: time_engine(fused_all or engine_all, x, draws, batch),
        "keras_loop_4agg_s": lambda: time_keras_loop(keras_fns, classes, np_aggs, x, draws, batch),
        "naive_4agg_s": (lambda: time_naive(members, np_aggs, x, draws, batch)) if naive else None,
        "engine_1agg_s": lambda: time_engine(engine_one, x, draws, batch),
        "fused_1agg_s": (lambda: time_engine(fused_one, x, draws, batch)) if fused_one else None,
        "low_precision_1agg_s": (lambda: time_engine(engine_low, x, draws, batch))
        if engine_low else None,
    }
    if extra_variants is not None:
        variants.update(extra_variants(members, x, draws, batch))
    variants = {k: v for k, v in variants.items() if v is not None}
    rows = []
    bar = Progress(repeats, f"bench {arch}", unit="repeat", interval=0)
    for repeat in range(repeats):
        row = {}
        for name, run in variants.items():
            row[name] = run()
            row[f"peak_after_{name}"] = matmul_peak(0.5)
        row["peak"] = float(np.median([v for k, v in row.items() if k.startswith("peak_after")]))
        rows.append(row)
        bar.update(repeat + 1)
    return dict(arch=arch, members=m, batch=batch, draws=draws,
                flops_per_pass=count_flops(members[0]), fused=fused_one is not None,
                runs=rows)


def sweep_batches(arch, m, batches, repeats, draws=0):
    """Engine passes/s (one aggregation) at each certify batch size: {batch: [per repeat]}."""
    cfg = SETTINGS[arch]
    classes = cfg.get("classes", 10)
    members = build_members(arch, m, cfg["shape"], classes)
    x = np.random.default_rng(0).uniform(size=cfg["shape"]).astype(np.float32)
    engine = core.Smooth([members_lib.freeze_keras(net) for net in members], classes, 0.25,
                    aggregators(m)[:1])
    out = {}
    for _ in range(repeats):
        for b in batches:
            n = max(draws or cfg["draws"], b)
            out.setdefault(b, []).append(m * n / time_engine(engine, x, n, b))
    return out


def measure_input_check(m: int, images: int, repeats: int, n: int = 10_000,
                        batch: int = 1000) -> dict:
    """Seconds of Smooth.certify_batch (n0 100, n draws) on `images` MNIST-sized images with the
    input contract checked and not, LeNet-5 members fused as cear_tf fuses them; the two
    engines run in turn within each repeat."""
    shape = SETTINGS["lenet5"]["shape"]
    networks = build_members("lenet5", m, shape, 10)
    x = np.random.default_rng(0).random((images, *shape)).astype(np.float32)
    engines = {}
    for check in (True, False):
        engine = fused_engine("lenet5", networks, 10, aggregators(m))
        engine.check_inputs = check
        engine.certify_batch(x[:1], 10, batch, 0.001, batch)  # trace
        engines["checked" if check else "unchecked"] = engine
    seconds = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.certify_batch(x, 100, n, 0.001, batch, image_ids=range(images))
            seconds[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(100):
        input_contract.check_images(x, shape)
    check_seconds = (time.perf_counter() - start) / 100
    return dict(images=images, n=n, members=m, seconds=seconds, check_seconds=check_seconds)
