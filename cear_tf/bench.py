"""Certification throughput, measured side by side in one process (ratios, not timings).

  python -m cear_tf.bench [--archs=lenet5,resnet20,resnet110] [--repeats=3] [--xla]
                         [--compare_precision=mixed_bfloat16]

For each architecture, with M randomly initialised members and one image:
  * engine      our `Smooth`, 4 aggregations (mean, mv, rw, gm) from one set of passes;
  * naive       what users write in Keras today: NumPy noise, `model.predict` per member,
                every aggregation run separately (so 4x the member passes);
  * engine/pass member forward passes per second of our engine (one aggregation);
  * torch/pass  Cohen et al.'s sampling loop (`_sample_noise`) in PyTorch on the same
                architecture, threads and batch (skipped if torch is not installed);
  * peak        the fraction of this process's measured float32 matmul peak that the engine
                reaches, from the architecture's counted FLOPs per pass.
Each measurement is repeated; the table shows the median ratio and its min-max over repeats.
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from cear_tf import models
from cear_tf import aggregate, cli, members as members_lib
from cear_tf import precision as precision_lib
from cear_tf.progress import Progress
from cear_tf.smoothing import Smooth

FLAGS = flags.FLAGS

def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (cli.run), never on import."""
    flags.DEFINE_list("archs", ["lenet5", "resnet20", "resnet110"], "Architectures to measure.")
    flags.DEFINE_integer("members", 5, "Ensemble size.")
    flags.DEFINE_integer("repeats", 3, "Repeats of every measurement.")
    flags.DEFINE_integer("draws", 0, "Noise draws per measurement (0 = the architecture's default "
                         "in SETTINGS, a few seconds each on 2 cores).")
    flags.DEFINE_bool("xla", False, "Compile the engine's sampling step with XLA.")
    flags.DEFINE_enum("compare_precision", "float32", list(precision_lib.PRECISIONS),
                      "Also time the engine with this inference precision (one more column: its "
                      "passes/s over float32's).")
    flags.DEFINE_list("sweep_batches", [], "Also time the engine's passes/s at each of these certify "
                      "batch sizes (batch-size tuning; one more table).")
    flags.DEFINE_string("json_out", None, "Also write the raw measurements as JSON.")

    flags.register_validator("members", lambda v: v >= 1, message="--members must be >= 1")
    flags.register_validator("repeats", lambda v: v >= 1, message="--repeats must be >= 1")
    flags.register_validator("draws", lambda v: v >= 0, message="--draws must be >= 0")
    flags.register_validator("sweep_batches", lambda v: all(b.isdigit() and int(b) >= 1 for b in v),
                             message="--sweep_batches must be integers >= 1")

# Certify batch and draws per architecture (a few seconds per measurement on 2 cores).
SETTINGS = {
    "lenet5": dict(shape=(28, 28, 1), batch=1000, draws=10000),
    "resnet20": dict(shape=(32, 32, 3), batch=500, draws=2000),
    "resnet110": dict(shape=(32, 32, 3), batch=200, draws=400),
    "resnet18": dict(shape=(64, 64, 3), batch=100, draws=200, classes=200),
}
AGGREGATIONS = ("mean", "mv", "rw", "gm")


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


def time_engine(smooth: Smooth, x, draws, batch) -> float:
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


def time_torch(arch, shape, classes, x, draws, batch, sigma=0.25) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(max(1, tf.config.threading.get_intra_op_parallelism_threads() or
                              __import__("os").cpu_count()))
    model = torch_model(arch, shape, classes)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def sample(num):  # Cohen et al., core.py `_sample_noise`
        counts = np.zeros(classes, int)
        with torch.no_grad():
            remaining = num
            while remaining > 0:
                this = min(batch, remaining)
                b = xt.repeat((this, 1, 1, 1))
                noise = torch.randn_like(b) * sigma
                pred = model(b + noise).argmax(1)
                counts += np.bincount(pred.numpy(), minlength=classes)
                remaining -= this
        return counts

    sample(batch)
    start = time.perf_counter()
    sample(draws)
    return time.perf_counter() - start


def measure(arch, m, repeats, xla, precision="float32", draws=0):
    cfg = SETTINGS[arch]
    classes = cfg.get("classes", 10)
    shape, batch, draws = cfg["shape"], cfg["batch"], draws or cfg["draws"]
    members = _members(arch, m, shape, classes)
    # The engine gets members frozen as cear_tf.certify loads them; the naive way keeps the
    # Keras models (what users call today).
    frozen = [members_lib.freeze_keras(net) for net in members]
    x = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    engine_all = Smooth(frozen, classes, 0.25, _aggregators(m), jit_compile=xla)
    engine_one = Smooth(frozen, classes, 0.25, _aggregators(m)[:1], jit_compile=xla)
    engine_low = None
    if precision != "float32":
        # The rewrite is applied when a graph is first run: trace the float32 engine first,
        # then the reduced-precision one, then switch the rewrite off again.
        engine_one.sample_counts(x, batch, batch, idx=0)
        precision_lib.set_inference_precision(precision)
        engine_low = Smooth(frozen, classes, 0.25, _aggregators(m)[:1], jit_compile=xla)
        engine_low.sample_counts(x, batch, batch, idx=0)
        precision_lib.set_inference_precision("float32")
    np_aggs = numpy_aggregators(m)
    rows = []
    bar = Progress(repeats, f"bench {arch}", unit="repeat", interval=0)
    for repeat in range(repeats):
        t_all = time_engine(engine_all, x, draws, batch)
        t_naive = time_naive(members, np_aggs, x, draws, batch)
        t_one = time_engine(engine_one, x, draws, batch)
        t_torch = time_torch(arch, shape, classes, x, draws, batch)
        t_low = time_engine(engine_low, x, draws, batch) if engine_low else None
        rows.append(dict(engine_4agg_s=t_all, naive_4agg_s=t_naive,
                         engine_pass_per_s=m * draws / t_one,
                         torch_pass_per_s=draws / t_torch if t_torch else None,
                         low_precision_pass_per_s=m * draws / t_low if t_low else None))
        bar.update(repeat + 1)
    return dict(arch=arch, members=m, batch=batch, draws=draws,
                flops_per_pass=count_flops(members[0]), runs=rows)


def sweep_batches(arch, m, batches, repeats, draws=0):
    """Engine passes/s (one aggregation) at each certify batch size: {batch: [per repeat]}."""
    cfg = SETTINGS[arch]
    classes = cfg.get("classes", 10)
    members = _members(arch, m, cfg["shape"], classes)
    x = np.random.default_rng(0).uniform(size=cfg["shape"]).astype(np.float32)
    engine = Smooth([members_lib.freeze_keras(net) for net in members], classes, 0.25,
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
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    unknown = [a for a in FLAGS.archs if a not in SETTINGS]
    if unknown:
        raise app.UsageError(f"--archs: unknown {unknown}; allowed: {', '.join(SETTINGS)}")
    try:
        precision_lib.check_precision(FLAGS.compare_precision, "--compare_precision")
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    peak = [matmul_peak() for _ in range(FLAGS.repeats)]
    results = [measure(a, FLAGS.members, FLAGS.repeats, FLAGS.xla, FLAGS.compare_precision,
                       FLAGS.draws) for a in FLAGS.archs]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} logical CPUs, TensorFlow {tf.__version__}; "
          f"float32 matmul peak {np.median(peak) / 1e9:.1f} GFLOP/s (median of {len(peak)}); "
          f"xla={FLAGS.xla}; native bfloat16: {precision_lib.cpu_has_native_bfloat16()}")
    low = FLAGS.compare_precision != "float32"
    print("| arch | M x draws @ batch | engine vs naive Keras, 4 aggregations | "
          "engine vs PyTorch, passes/s | engine passes/s | engine GFLOP/s | % of matmul peak |"
          + (f" {FLAGS.compare_precision} vs float32, passes/s |" if low else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if low else ""))
    for r in results:
        runs = r["runs"]
        speedup = [x["naive_4agg_s"] / x["engine_4agg_s"] for x in runs]
        passes = [x["engine_pass_per_s"] for x in runs]
        gflops = [p * r["flops_per_pass"] / 1e9 for p in passes]
        if runs[0]["torch_pass_per_s"]:
            vs_torch = _stats([x["engine_pass_per_s"] / x["torch_pass_per_s"] for x in runs])
        else:
            vs_torch = "torch not installed"
        frac = [100 * g * 1e9 / np.median(peak) for g in gflops]
        low_col = ""
        if low:
            ratio = [x["low_precision_pass_per_s"] / x["engine_pass_per_s"] for x in runs]
            low_col = f" {_stats(ratio)}x |"
        print(f"| {r['arch']} | {r['members']} x {r['draws']} @ {r['batch']} | {_stats(speedup)}x "
              f"| {vs_torch}x | {np.median(passes):.0f} | {np.median(gflops):.1f} | "
              f"{_stats(frac)} |{low_col}")
    sweeps = {}
    if FLAGS.sweep_batches:
        batches = [int(b) for b in FLAGS.sweep_batches]
        print("\nengine passes/s by certify batch size (median, min-max over repeats)")
        print("| arch | " + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|" + "---|" * len(batches))
        for arch in FLAGS.archs:
            sweeps[arch] = sweep_batches(arch, FLAGS.members, batches, FLAGS.repeats, FLAGS.draws)
            print(f"| {arch} | " + " | ".join(_stats(sweeps[arch][b], 0) for b in batches) + " |")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(dict(peak_flops=peak, results=results, batch_sweep=sweeps), f, indent=2)


if __name__ == "__main__":
    cli.run(main, define_flags)
