"""Certification throughput, measured side by side in one process (ratios, not timings).

  python -m cear_tf.cli.bench [--archs=lenet5,resnet20,resnet110] [--repeats=3] [--xla]
                         [--compare_precision=mixed_bfloat16] [--train_batches=128,512]

For each architecture, with M randomly initialised members and one image:
  * engine       our `Smooth`, 4 aggregations (mean, mv, rw, gm) from one set of passes, on
                 the members fused into one network where cear_tf fuses them (LeNet-5);
  * Keras loop   Cohen et al.'s loop as a competent Keras user writes it: members in
                 tf.functions, all warmed up, noise shared, passes shared by the aggregations;
  * naive Keras  model.predict per member and batch, every aggregation re-running the
                 members (4x the passes): what a first attempt looks like (--nonaive skips it);
  * fused        the engine on the fused network vs on separate members (one aggregation);
  * PyTorch      Cohen's `_sample_noise` loop for the ensemble: eval, inference_mode, frozen
                 with batch norm folded (torch.jit.freeze + optimize_for_inference),
                 channels_last for the ResNets, one noise draw shared by the members, the
                 same threads and batch (skipped if torch is not installed);
  * peak         the fraction of the float32 matmul peak, measured right after each variant in
                 the same repeat, that the engine's counted FLOPs reach.
Variants run interleaved, once per repeat each (A B C ... A B C ...), so load changes hit all
alike; the table shows each ratio's median and min-max over repeats.
"""

from __future__ import annotations

import json
import os
import platform
import time

import numpy as np
from absl import app, flags

from cear_tf.config import choices
from cear_tf.cli import runner
from cear_tf.common.lazy import lazy_module
from cear_tf.common.progress import Progress

# Loaded when used, so --help answers without TensorFlow.
tf = lazy_module("tensorflow")
aggregate = lazy_module("cear_tf.smoothing.aggregate")
recipe = lazy_module("cear_tf.training.recipe")
loop = lazy_module("cear_tf.training.loop")
members_lib = lazy_module("cear_tf.ensemble.members")
models = lazy_module("cear_tf.models")
precision_lib = lazy_module("cear_tf.ensemble.precision")
core = lazy_module("cear_tf.smoothing.core")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (runner.run), never on import."""
    flags.DEFINE_list("archs", ["lenet5", "resnet20", "resnet110"], "Architectures to measure.")
    flags.DEFINE_integer("num_members", 5, "Ensemble size.")
    flags.DEFINE_integer("repeats", 3, "Repeats of every measurement.")
    flags.DEFINE_integer("draws", 0, "Noise draws per measurement (0 = the architecture's default "
                         "in SETTINGS, a few seconds each on 2 cores).")
    flags.DEFINE_bool("naive", True, "Also time the naive Keras variant (model.predict per "
                      "batch, every aggregation re-running the members; slow).")
    flags.DEFINE_bool("xla", False, "Compile the engine's sampling step with XLA.")
    flags.DEFINE_enum("compare_precision", "float32", list(choices.PRECISIONS),
                      "Also time the engine with this inference precision (one more column: its "
                      "passes/s over float32's).")
    flags.DEFINE_list("sweep_batches", [], "Also time the engine's passes/s at each of these certify "
                      "batch sizes (batch-size tuning; one more table).")
    flags.DEFINE_list("train_batches", [], "Also time training --num_members LeNet-5 CEAR "
                      "students (T = 2..6, MNIST shape, SGD as cear_tf.cli.train) fused in one step "
                      "against one after another, at each of these batch sizes (one more "
                      "table; empty: not measured).")
    flags.DEFINE_bool("conv1", False, "Also time formulations of the fused LeNet-5 first layer "
                      "(5x5 convolution of a 1-channel image to 6 M outputs, ReLU, 2x2 max pool) "
                      "against tf.nn.conv2d (one more table; what was tried to lift conv1).")
    flags.DEFINE_integer("train_steps", 40, "Optimizer steps per member in each training "
                         "measurement.")
    flags.DEFINE_list("attack_logit_noise", [], "Also time an attack step (ensemble scores and "
                      "their input gradient, as cear_tf.cli.attack queries them) on --num_members "
                      "LeNet-5 members, fused vs one by one, at each of these logit noises "
                      "(one more table; empty: not measured).")
    flags.DEFINE_integer("input_check_images", 0, "Also time certify_batch on this many "
                         "images through LeNet-5 engines with the input contract's check on and "
                         "off (0 = skip).")
    flags.DEFINE_string("outfile", None, "Also write the raw measurements as JSON.")

    flags.register_validator("num_members", lambda v: v >= 1,
                             message="--num_members must be >= 1")
    flags.register_validator("repeats", lambda v: v >= 1, message="--repeats must be >= 1")
    flags.register_validator("draws", lambda v: v >= 0, message="--draws must be >= 0")
    flags.register_validator("sweep_batches", lambda v: all(b.isdigit() and int(b) >= 1 for b in v),
                             message="--sweep_batches must be integers >= 1")
    flags.register_validator("train_steps", lambda v: v >= 1,
                             message="--train_steps must be >= 1")
    flags.register_validator("train_batches", lambda v: all(b.isdigit() and int(b) >= 1 for b in v),
                             message="--train_batches must be integers >= 1")
    flags.register_validator("attack_logit_noise", _all_non_negative_floats,
                             message="--attack_logit_noise must be numbers >= 0")


def _all_non_negative_floats(values) -> bool:
    try:
        return all(np.isfinite(float(v)) and float(v) >= 0 for v in values)
    except ValueError:
        return False

# Certify batch and draws per architecture (a few seconds per measurement on 2 cores).
SETTINGS = {
    "lenet5": dict(shape=(28, 28, 1), batch=1000, draws=10000),
    "resnet20": dict(shape=(32, 32, 3), batch=500, draws=2000),
    "resnet110": dict(shape=(32, 32, 3), batch=200, draws=400),
    "resnet18": dict(shape=(64, 64, 3), batch=100, draws=200, classes=200),
}
AGGREGATIONS = ("mean", "mv", "rw", "gm")


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


def _members(arch, m, shape, classes):
    out = []
    for i in range(m):
        tf.keras.utils.set_random_seed(i)
        out.append(models.build_model(arch, shape, classes))
    return out


def _aggregators(m):
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


# ---- PyTorch reference: Cohen et al.'s sampling loop on the same architectures ------------


def torch_model(arch, shape, classes):
    import torch
    from torch import nn

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                   nn.Linear(84, classes))

        def forward(self, x):
            return self.f(x)

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.c1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(c_out)
            self.c2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(c_out)
            self.pad = c_out - c_in
            self.stride = stride

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            s = x
            if self.stride != 1 or self.pad:
                s = nn.functional.pad(x[:, :, ::2, ::2],
                                      (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return torch.relu(y + s)

    class CifarResNet(nn.Module):
        def __init__(self, depth):
            super().__init__()
            n = (depth - 2) // 6
            layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
            c = 16
            for stage, width in enumerate((16, 32, 64)):
                for b in range(n):
                    layers.append(Block(c, width, 2 if stage and not b else 1))
                    c = width
            self.f = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(64, classes))

        def forward(self, x):
            return self.f(x)

    if arch == "lenet5":
        return LeNet5().eval()
    if arch.startswith("resnet") and arch != "resnet18":
        return CifarResNet(int(arch[6:])).eval()
    raise ValueError(f"no PyTorch port of {arch}")


def torch_ensemble(arch, shape, classes, m):
    """M PyTorch members in eval mode, frozen with batch norm folded (torch.jit.freeze and
    optimize_for_inference), channels_last for the ResNets (where it was faster), or None
    without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, tf.config.threading.get_intra_op_parallelism_threads() or
                              os.cpu_count()))
    channels_last = arch != "lenet5"
    out = []
    for i in range(m):
        torch.manual_seed(i)
        model = torch_model(arch, shape, classes)
        example = torch.zeros(2, shape[2], shape[0], shape[1])
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            example = example.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            scripted = torch.jit.trace(model, example)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(scripted.eval()))
        out.append(frozen)
    return out, channels_last


def time_torch(ensemble, classes, x, draws, batch, sigma=0.25) -> float | None:
    """Cohen et al.'s sampling loop (core.py `_sample_noise`) for the ensemble: one noise draw
    per batch shared by the members (as our engine does), inference mode."""
    if ensemble is None:
        return None
    import torch
    members, channels_last = ensemble
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def sample(num):
        counts = np.zeros((len(members), classes), int)
        with torch.inference_mode():
            remaining = num
            while remaining > 0:
                this = min(batch, remaining)
                b = xt.repeat((this, 1, 1, 1))
                noisy = b + torch.randn_like(b) * sigma
                if channels_last:
                    noisy = noisy.contiguous(memory_format=torch.channels_last)
                for j, model in enumerate(members):
                    counts[j] += np.bincount(model(noisy).argmax(1).numpy(), minlength=classes)
                remaining -= this
        return counts

    sample(batch)
    sample(draws % batch or batch)  # the last partial batch's shape, warmed up too
    start = time.perf_counter()
    sample(draws)
    return time.perf_counter() - start


def _fused_engine(arch, members, classes, aggregators):
    """The engine on the members fused into one network (LeNet-5 only), or None."""
    if arch != "lenet5":
        return None
    from cear_tf.ensemble.loading import FusedMembers
    from cear_tf.models.fused import FusedLeNet5
    fused = FusedMembers(FusedLeNet5.from_networks(members))
    frozen = [members_lib.freeze_keras(net) for net in members]
    return core.Smooth(frozen, classes, 0.25, aggregators, fused=fused)


def measure(arch, m, repeats, xla, precision="float32", draws=0, naive=True):
    """Every variant once per repeat, interleaved (A B C ... A B C ...), with the matmul peak
    measured between them: machine-load changes hit all variants alike, and each ratio is
    taken within one repeat."""
    cfg = SETTINGS[arch]
    classes = cfg.get("classes", 10)
    shape, batch, draws = cfg["shape"], cfg["batch"], draws or cfg["draws"]
    members = _members(arch, m, shape, classes)
    # The engine gets members frozen as cear_tf.cli.certify loads them; the Keras baselines keep
    # the Keras models (what users call).
    frozen = [members_lib.freeze_keras(net) for net in members]
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    engine_all = core.Smooth(frozen, classes, 0.25, _aggregators(m), jit_compile=xla)
    engine_one = core.Smooth(frozen, classes, 0.25, _aggregators(m)[:1], jit_compile=xla)
    fused_all = _fused_engine(arch, members, classes, _aggregators(m))
    fused_one = _fused_engine(arch, members, classes, _aggregators(m)[:1])
    engine_low = None
    if precision != "float32":
        # The rewrite is applied when a graph is first run: trace the float32 engine first,
        # then the reduced-precision one, then switch the rewrite off again.
        engine_one.sample_counts(x, batch, batch, idx=0)
        precision_lib.set_inference_precision(precision)
        engine_low = core.Smooth(frozen, classes, 0.25, _aggregators(m)[:1], jit_compile=xla)
        engine_low.sample_counts(x, batch, batch, idx=0)
        precision_lib.set_inference_precision("float32")
    np_aggs = numpy_aggregators(m)
    torch_members = torch_ensemble(arch, shape, classes, m)
    keras_fns = keras_loop_functions(members, shape, batch)
    variants = {
        "engine_4agg_s": lambda: time_engine(fused_all or engine_all, x, draws, batch),
        "keras_loop_4agg_s": lambda: time_keras_loop(keras_fns, classes, np_aggs, x, draws, batch),
        "naive_4agg_s": (lambda: time_naive(members, np_aggs, x, draws, batch)) if naive else None,
        "engine_1agg_s": lambda: time_engine(engine_one, x, draws, batch),
        "fused_1agg_s": (lambda: time_engine(fused_one, x, draws, batch)) if fused_one else None,
        "torch_s": (lambda: time_torch(torch_members, classes, x, draws, batch))
        if torch_members else None,
        "low_precision_1agg_s": (lambda: time_engine(engine_low, x, draws, batch))
        if engine_low else None,
    }
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


def _space_to_depth_kernel(w: np.ndarray) -> np.ndarray:
    """The 5x5 SAME convolution + 2x2 pool of a 1-channel image as a 3x3 convolution of its
    2x2 space-to-depth (4 channels) to 4 pooling phases x C outputs: phase (a, b) of output
    (2p + a, 2q + b) reads input (2p + a + u, 2q + b + v) = s2d[p + (a + u) // 2, ...]."""
    c = w.shape[-1]
    out = np.zeros((3, 3, 4, 4 * c), np.float32)
    for a in range(2):
        for b in range(2):
            for du in range(3):
                for dv in range(3):
                    for r in range(2):
                        for s in range(2):
                            u, v = 2 * du + r - a, 2 * dv + s - b
                            if 0 <= u < 5 and 0 <= v < 5:
                                out[du, dv, 2 * r + s, (2 * a + b) * c:(2 * a + b + 1) * c] = \
                                    w[u, v, 0]
    return out


def conv1_formulations(m: int, batch: int, repeats: int, calls: int = 20) -> dict:
    """Seconds per `calls` calls of the fused LeNet-5 first layer (28x28x1 -> 14x14x6M: 5x5
    SAME convolution, bias, ReLU, 2x2 max pool) in each formulation, interleaved per repeat,
    and each one's largest deviation from tf.nn.conv2d's output."""
    rng = np.random.default_rng(0)
    c = 6 * m
    w = rng.normal(size=(5, 5, 1, c)).astype(np.float32)
    bias = tf.constant(rng.normal(size=(c,)).astype(np.float32))
    kernel, flat = tf.constant(w), tf.constant(w.reshape(25, c))
    s2d_kernel = tf.constant(_space_to_depth_kernel(w))

    def pool(y):
        return tf.nn.max_pool2d(tf.nn.relu(y + bias), 2, 2, "VALID")

    def conv2d(x):
        return pool(tf.nn.conv2d(x, kernel, 1, "SAME"))

    def patches_matmul(x):  # im2col by extract_patches, then one matmul
        p = tf.image.extract_patches(x, [1, 5, 5, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
        return pool(tf.reshape(tf.reshape(p, [-1, 25]) @ flat, [-1, 28, 28, c]))

    def shifted_sum(x):  # 25 shifted copies of the image, each scaled by a filter tap
        xp = tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]])
        y = 0.0
        for u in range(5):
            for v in range(5):
                y += xp[:, u:u + 28, v:v + 28, :] * w[u, v, 0]
        return pool(y)

    def space_to_depth(x):  # pooling phases as channels: max over them is the pool
        xp = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]]), 2)
        y = tf.nn.conv2d(xp, s2d_kernel, 1, "VALID")
        y = tf.reduce_max(tf.reshape(y, [-1, 14, 14, 4, c]), axis=3)
        return tf.nn.relu(y + bias)

    variants = {name: tf.function(f) for name, f in (
        ("conv2d", conv2d), ("extract_patches + matmul", patches_matmul),
        ("25 shifted multiply-adds", shifted_sum), ("space-to-depth 3x3 conv", space_to_depth))}
    x = tf.constant(rng.uniform(size=(batch, 28, 28, 1)).astype(np.float32))
    want = variants["conv2d"](x).numpy()
    deviation = {name: float(np.abs(f(x).numpy() - want).max()) for name, f in variants.items()}
    seconds = _interleaved_seconds(variants, x, repeats, calls)
    return dict(batch=batch, calls=calls, outputs=c, seconds=seconds, deviation=deviation)


def _interleaved_seconds(functions, x, repeats: int, calls: int) -> dict[str, list[float]]:
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


def measure_input_check(m: int, images: int, repeats: int, n: int = 10_000,
                        batch: int = 1000) -> dict:
    """Seconds of Smooth.certify_batch (n0 100, n draws) on `images` MNIST-sized images with the
    input contract checked and not, LeNet-5 members fused as cear_tf fuses them; the two
    engines run in turn within each repeat."""
    shape = SETTINGS["lenet5"]["shape"]
    networks = _members("lenet5", m, shape, 10)
    x = np.random.default_rng(0).random((images, *shape)).astype(np.float32)
    engines = {}
    for check in (True, False):
        engine = _fused_engine("lenet5", networks, 10, _aggregators(m))
        engine.check_inputs = check
        engine.certify_batch(x[:1], 10, batch, 0.001, batch)  # trace
        engines["checked" if check else "unchecked"] = engine
    seconds = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.certify_batch(x, 100, n, 0.001, batch, image_ids=range(images))
            seconds[name].append(time.perf_counter() - start)
    from cear_tf.smoothing import input_contract
    start = time.perf_counter()
    for _ in range(100):
        input_contract.check_images(x, shape)
    check_seconds = (time.perf_counter() - start) / 100
    return dict(images=images, n=n, members=m, seconds=seconds, check_seconds=check_seconds)


def _student_configs(m: int, batch: int):
    """M CEAR students as cear_tf.cli.train makes them (seeds 0..M-1, T = 2, 3, ..., VGA)."""
    base = recipe.MemberConfig(role="student", arch="lenet5", dataset="mnist", seed=0,
                                 base_sigma=0.5, vga=True, batch_size=batch, epochs=1)
    return recipe.ensemble_configs(base, [2 + i for i in range(m)], "student")


def measure_training(m: int, batch: int, repeats: int, steps: int = 40) -> list[dict]:
    """Student-images/s of training M LeNet-5 CEAR students one after another (each its own
    Distiller, as cear_tf.cli.train without fusion) and fused in one step (FusedEnsembleTrainer),
    on random MNIST-shaped batches with a random LeNet-5 teacher whose logits are computed
    once, before timing, as cear_tf.cli.train does without augmentation; both also with the
    teacher called at every step (`*_teacher_s`, as with augmentation). The four variants
    interleaved, `steps` optimizer steps per member each time, after a warm-up."""
    from cear_tf.data import datasets
    info = datasets.DATASETS["mnist"]
    rng = np.random.default_rng(0)
    n = steps * batch
    x = rng.uniform(size=(n, *info.image_shape)).astype(np.float32)
    y = rng.integers(0, info.num_classes, size=n).astype(np.int32)
    teacher = models.build_model("lenet5", info.image_shape, info.num_classes,
                                 (info.mean, info.std))
    configs = _student_configs(m, batch)

    def separate_trainers():
        out = []
        for cfg in configs:
            trainer = recipe.build_trainer(cfg, info, teacher)
            trainer.compile(optimizer=recipe.build_optimizer(cfg, steps))
            out.append(trainer)
        return out

    def fused_trainer():
        fused = loop.build_fused_trainer(configs, info, teacher)
        fused.compile(optimizer=recipe.build_optimizer(configs[0], steps,
                                                         global_clipnorm=False))
        return [fused]

    # As cear_tf.cli.train's pipelines: the teacher's logits computed once and carried by the
    # batches, tf.data autotuning off (datasets.without_autotune; with it, a fit this short can
    # wait a second or more for the tuner at its end).
    targets = recipe.teacher_logits(teacher, x)
    stack = lambda a: np.repeat(a[:, None], m, axis=1)  # noqa: E731

    def pipeline(*arrays):
        return datasets.without_autotune(
            tf.data.Dataset.from_tensor_slices(arrays).batch(batch).cache())

    variants = {
        "separate_s": (separate_trainers(), pipeline((x, targets), y)),
        "fused_s": (fused_trainer(), pipeline((stack(x), stack(targets)), stack(y))),
        "separate_teacher_s": (separate_trainers(), pipeline(x, y)),
        "fused_teacher_s": (fused_trainer(), pipeline(stack(x), stack(y))),
    }

    def seconds(name):
        trainers_, dataset = variants[name]
        start = time.perf_counter()
        for trainer in trainers_:
            trainer.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - start

    for name in variants:  # trace and fill the caches
        seconds(name)
    rows = [{name: seconds(name) for name in variants} for _ in range(repeats)]
    return [dict(batch=batch, members=m, steps=steps, images=m * n, **row) for row in rows]


def measure_attack(m: int, logit_noise: float, repeats: int, batch: int = 100,
                   calls: int = 30) -> dict:
    """Seconds per `calls` attack steps (the GM ensemble's log-space scores on a batch and
    their gradient with respect to the images, as cear_tf.cli.attack's APGD takes them) on M
    random LeNet-5 members, fused (cear_tf.cli.attack's default) and one by one, interleaved."""
    from cear_tf.attacks import evaluation
    from cear_tf.ensemble import deployed
    from cear_tf.ensemble.loading import FusedMembers
    from cear_tf.models.fused import FusedLeNet5
    shape = SETTINGS["lenet5"]["shape"]
    networks = _members("lenet5", m, shape, 10)
    frozen = [members_lib.freeze_keras(net) for net in networks]
    fused = FusedMembers(FusedLeNet5.from_networks(networks))
    gm = aggregate.make_aggregator("gm", m)
    x = tf.constant(np.random.default_rng(0).uniform(size=(batch, *shape)).astype(np.float32))
    steps = {}
    for name, f in (("one by one", None), ("fused", fused)):
        model = evaluation.AttackedEnsemble(
            deployed.DeployedEnsemble(frozen, logit_noise, fused=f), gm)

        @tf.function
        def step(images, model=model):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = tf.reduce_sum(model.ensemble_log_space_scores(images)[:, 0])
            return tape.gradient(loss, images)

        step(x).numpy()  # trace
        steps[name] = step
    seconds = _interleaved_seconds(steps, x, repeats, calls)
    return dict(members=m, logit_noise=logit_noise, batch=batch, calls=calls, seconds=seconds)


def sweep_batches(arch, m, batches, repeats, draws=0):
    """Engine passes/s (one aggregation) at each certify batch size: {batch: [per repeat]}."""
    cfg = SETTINGS[arch]
    classes = cfg.get("classes", 10)
    members = _members(arch, m, cfg["shape"], classes)
    x = np.random.default_rng(0).uniform(size=cfg["shape"]).astype(np.float32)
    engine = core.Smooth([members_lib.freeze_keras(net) for net in members], classes, 0.25,
                    _aggregators(m)[:1])
    out = {}
    for _ in range(repeats):
        for b in batches:
            n = max(draws or cfg["draws"], b)
            out.setdefault(b, []).append(m * n / time_engine(engine, x, n, b))
    return out


def _stats(values, digits=2):
    v = np.asarray(values, float)
    return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}-{v.max():.{digits}f})"

def main(argv):
    runner.require(argv)
    unknown = [a for a in FLAGS.archs if a not in SETTINGS]
    if unknown:
        raise app.UsageError(f"--archs: unknown {unknown}; allowed: {', '.join(SETTINGS)}")
    try:
        precision_lib.check_precision(FLAGS.compare_precision, "--compare_precision")
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    results = [measure(a, FLAGS.num_members, FLAGS.repeats, FLAGS.xla, FLAGS.compare_precision,
                       FLAGS.draws, FLAGS.naive) for a in FLAGS.archs]
    flags_cpu = cpu_flags()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
          f"CPUs, TensorFlow {tf.__version__}; CPU flags: avx512_bf16={'avx512_bf16' in flags_cpu}, "
          f"amx_bf16={'amx_bf16' in flags_cpu}; xla={FLAGS.xla}; variants interleaved per "
          f"repeat, median (min-max) over {FLAGS.repeats} repeats")
    if results:
        low = FLAGS.compare_precision != "float32"
        print("| arch | M x draws @ batch | engine vs Keras loop, 4 aggregations | engine vs naive "
              "Keras | fused vs unfused engine | engine vs PyTorch, passes/s | engine passes/s | "
              "% of matmul peak (same repeat) |" + (f" {FLAGS.compare_precision} vs float32 |"
                                                     if low else ""))
        print("|---|---|---|---|---|---|---|---|" + ("---|" if low else ""))
        for r in results:
            runs = r["runs"]
            best = "fused_1agg_s" if r["fused"] else "engine_1agg_s"

            def ratio(num, den, runs=runs):
                if num not in runs[0] or den not in runs[0]:
                    return "-"
                return _stats([x[num] / x[den] for x in runs]) + "x"

            passes = [r["members"] * r["draws"] / x[best] for x in runs]
            frac = [100 * p * r["flops_per_pass"] / x["peak"] for p, x in zip(passes, runs)]
            low_col = f" {ratio('engine_1agg_s', 'low_precision_1agg_s')} |" if low else ""
            print(f"| {r['arch']} | {r['members']} x {r['draws']} @ {r['batch']} | "
                  f"{ratio('keras_loop_4agg_s', 'engine_4agg_s')} | "
                  f"{ratio('naive_4agg_s', 'engine_4agg_s')} | "
                  f"{ratio('engine_1agg_s', 'fused_1agg_s')} | "
                  f"{ratio('torch_s', best) if 'torch_s' in runs[0] else 'torch not installed'} | "
                  f"{np.median(passes):.0f} | {_stats(frac, 0)} |{low_col}")
    sweeps = {}
    if FLAGS.sweep_batches:
        batches = [int(b) for b in FLAGS.sweep_batches]
        print("\nengine passes/s by certify batch size (median, min-max over repeats)")
        print("| arch | " + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|" + "---|" * len(batches))
        for arch in FLAGS.archs:
            sweeps[arch] = sweep_batches(arch, FLAGS.num_members, batches, FLAGS.repeats, FLAGS.draws)
            print(f"| {arch} | " + " | ".join(_stats(sweeps[arch][b], 0) for b in batches) + " |")
    conv1 = {}
    if FLAGS.conv1:
        conv1 = conv1_formulations(FLAGS.num_members, 1000, FLAGS.repeats)
        base = conv1["seconds"]["conv2d"]
        print(f"\nfused LeNet-5 conv1 + ReLU + pool ({conv1['outputs']} outputs, batch 1000): "
              f"speed relative to tf.nn.conv2d (median, min-max over repeats; interleaved)")
        print("| formulation | speed vs conv2d | max deviation from conv2d |")
        print("|---|---|---|")
        for name, times in conv1["seconds"].items():
            print(f"| {name} | {_stats([b / t for b, t in zip(base, times)])}x | "
                  f"{conv1['deviation'][name]:.1e} |")
    trained = {}
    if FLAGS.train_batches:
        print(f"\ntraining {FLAGS.num_members} LeNet-5 students: fused in one step vs one after "
              f"another, student-images/s (median, min-max over repeats; interleaved)")
        print("| batch | one after another | fused | fused vs one after another | "
              "best vs best | teacher logits precomputed vs teacher per step: one after "
              "another / fused |")
        print("|---|---|---|---|---|---|")
        for b in (int(v) for v in FLAGS.train_batches):
            rows = measure_training(FLAGS.num_members, b, FLAGS.repeats, FLAGS.train_steps)
            trained[b] = rows
            # A shared machine's slow spells last seconds, as long as one measurement here:
            # the fastest time of each variant is its unloaded speed.
            best = (min(r["separate_s"] for r in rows) / min(r["fused_s"] for r in rows))
            print(f"| {b} | {_stats([r['images'] / r['separate_s'] for r in rows], 0)} | "
                  f"{_stats([r['images'] / r['fused_s'] for r in rows], 0)} | "
                  f"{_stats([r['separate_s'] / r['fused_s'] for r in rows])}x | {best:.2f}x | "
                  f"{_stats([r['separate_teacher_s'] / r['separate_s'] for r in rows])}x / "
                  f"{_stats([r['fused_teacher_s'] / r['fused_s'] for r in rows])}x |")
    attacked = []
    if FLAGS.attack_logit_noise:
        print(f"\nattack steps (GM scores + input gradient, batch 100) on {FLAGS.num_members} "
              f"LeNet-5 members: fused vs one by one (median, min-max over repeats; interleaved)")
        print("| logit noise | one by one, steps/s | fused, steps/s | fused vs one by one |")
        print("|---|---|---|---|")
        for eps in (float(v) for v in FLAGS.attack_logit_noise):
            row = measure_attack(FLAGS.num_members, eps, FLAGS.repeats)
            attacked.append(row)
            one, fused = row["seconds"]["one by one"], row["seconds"]["fused"]
            print(f"| {eps:g} | {_stats([row['calls'] / t for t in one], 1)} | "
                  f"{_stats([row['calls'] / t for t in fused], 1)} | "
                  f"{_stats([a / b for a, b in zip(one, fused)])}x |")
    checked = {}
    if FLAGS.input_check_images:
        checked = measure_input_check(FLAGS.num_members, FLAGS.input_check_images,
                                      FLAGS.repeats, n=FLAGS.draws or 10_000)
        on, off = checked["seconds"]["checked"], checked["seconds"]["unchecked"]
        print(f"\ninput contract check (cear_tf.smoothing.input_contract): certify_batch of "
              f"{checked['images']} images, N = {checked['n']}, {checked['members']} LeNet-5 "
              f"members fused (median, min-max over repeats; interleaved)")
        print("| images/s checked | images/s unchecked | checked vs unchecked time | the check "
              "alone, per batch | its share of the unchecked time |")
        print("|---|---|---|---|---|")
        print(f"| {_stats([checked['images'] / t for t in on], 3)} | "
              f"{_stats([checked['images'] / t for t in off], 3)} | "
              f"{_stats([a / b for a, b in zip(on, off)], 4)}x | "
              f"{1e6 * checked['check_seconds']:.0f} us | "
              f"{100 * checked['check_seconds'] / np.median(off):.4f}% |")
    if FLAGS.outfile:
        with open(FLAGS.outfile, "w") as f:
            json.dump(dict(results=results, batch_sweep=sweeps, training=trained,
                           conv1=conv1, attack=attacked, input_check=checked), f, indent=2)


if __name__ == "__main__":
    runner.run(main, define_flags)
