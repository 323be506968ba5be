"""PyTorch reference for the certification benchmark: Cohen et al.'s sampling loop on the
same architectures in PyTorch (eval, inference_mode, frozen with batch norm folded,
channels_last for the ResNets), timed interleaved with our engine in the same repeats.

  pip install '.[bench]'   # torch
  python benchmarks/pytorch_reference.py --archs=lenet5,resnet20 --repeats=3

Not part of the library: it compares cear_tf with another framework.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from cear_tf.performance import certification
from cear_tf.performance.timing import stats


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


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("archs", ["lenet5", "resnet20"], "Architectures to measure (PyTorch ports: "
                      "lenet5, resnet20, resnet110).")
    flags.DEFINE_integer("num_members", 5, "Ensemble size.")
    flags.DEFINE_integer("repeats", 3, "Repeats; the engine and PyTorch run in turn in each.")
    flags.DEFINE_integer("draws", 0, "Noise draws per measurement (0 = the architecture's default).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("pytorch_reference.py: torch is not installed (pip install '.[bench]')")
    unknown = [a for a in FLAGS.archs if a not in certification.SETTINGS or a == "resnet18"]
    if unknown:
        raise app.UsageError(f"--archs: no PyTorch port of {unknown}")
    print(f"{os.cpu_count()} logical CPUs, TensorFlow {tf.__version__}, torch {torch.__version__}; "
          f"engine (one aggregation) and PyTorch interleaved per repeat, median (min-max) over "
          f"{FLAGS.repeats} repeats")
    print("| arch | M x draws @ batch | engine vs PyTorch, passes/s | engine passes/s |")
    print("|---|---|---|---|")
    for arch in FLAGS.archs:
        cfg = certification.SETTINGS[arch]
        classes = cfg.get("classes", 10)

        def torch_variant(members, x, draws, batch, arch=arch, classes=classes, cfg=cfg):
            ensemble = torch_ensemble(arch, cfg["shape"], classes, len(members))
            return {"torch_s": lambda: time_torch(ensemble, classes, x, draws, batch)}

        r = certification.measure(arch, FLAGS.num_members, FLAGS.repeats, xla=False,
                                  draws=FLAGS.draws, naive=False, extra_variants=torch_variant)
        best = "fused_1agg_s" if r["fused"] else "engine_1agg_s"
        runs = r["runs"]
        passes = [r["members"] * r["draws"] / x[best] for x in runs]
        print(f"| {arch} | {r['members']} x {r['draws']} @ {r['batch']} | "
              f"{stats([x['torch_s'] / x[best] for x in runs])}x | {np.median(passes):.0f} |")


if __name__ == "__main__":
    define_flags()
    app.run(main)
