"""cear_tf.cli.bench runs end to end on a tiny workload and reports what it measured."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# cear_tf.cli.bench runs in a subprocess: its absl flags (--xla, ...) share names with
# cear_tf.cli.certify's, which other tests import in this process.

# LeNet-5 by hand: c1 28*28*6*25, c3 10*10*16*150, dense 400*120 + 120*84 + 84*10
# multiply-adds, x2.
LENET5_FLOPS = 2 * (28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10)


def test_bench_cli_tiny(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "cear_tf.cli.bench", "--archs=lenet5", "--num_members=2", "--repeats=1",
         "--draws=1500", "--compare_precision=mixed_bfloat16", "--sweep_batches=250,500",
         "--train_batches=16", "--train_steps=2", "--attack_logit_noise=0,0.3",
         "--input_check_images=2", f"--outfile={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    main_table = proc.stdout.split("by certify batch size")[0]
    table = [line for line in main_table.splitlines() if line.startswith("| lenet5 |")]
    assert len(table) == 1 and table[0].count("|") == 9  # 8 columns incl. the bfloat16 one
    record = json.loads(out.read_text())
    (result,) = record["results"]
    (run,) = result["runs"]
    assert result["flops_per_pass"] == LENET5_FLOPS and result["draws"] == 1500
    sweep = record["batch_sweep"]["lenet5"]
    assert sorted(sweep) == ["250", "500"] and all(v[0] > 0 for v in sweep.values())
    assert "| lenet5 | " in proc.stdout.split("by certify batch size")[1]
    # Every variant ran in the one repeat, with a matmul peak measured after each.
    for key in ("engine_4agg_s", "keras_loop_4agg_s", "naive_4agg_s", "engine_1agg_s",
                "fused_1agg_s", "low_precision_1agg_s", "peak"):
        assert run[key] > 0, key
    assert sum(k.startswith("peak_after_") for k in run) >= 6
    assert result["fused"] is True  # LeNet-5 members run fused in the engine
    assert "avx512_bf16=" in proc.stdout and "amx_bf16=" in proc.stdout
    # Training: 2 students x 2 steps x 16 images, one after another and fused.
    (trained,) = record["training"]["16"]
    assert trained["images"] == 64
    for key in ("separate_s", "fused_s", "separate_teacher_s", "fused_teacher_s"):
        assert trained[key] > 0, key
    assert "| 16 | " in proc.stdout.split("fused in one step vs one after another")[1]
    # Attack steps, fused vs one by one, at both logit noises.
    assert [a["logit_noise"] for a in record["attack"]] == [0.0, 0.3]
    assert all(len(t) == 1 and t[0] > 0 for a in record["attack"] for t in a["seconds"].values())
    attack_table = proc.stdout.split("fused vs one by one (median")[1]
    assert "| 0 | " in attack_table and "| 0.3 | " in attack_table
    # The input contract's cost: both engines timed in the one repeat.
    check = record["input_check"]
    assert check["images"] == 2 and check["n"] == 1500
    assert all(len(v) == 1 and v[0] > 0 for v in check["seconds"].values())
    assert "checked vs unchecked time" in proc.stdout


def test_bench_rejects_bad_flags():
    proc = subprocess.run([sys.executable, "-m", "cear_tf.cli.bench", "--archs=vgg"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--archs: unknown ['vgg']" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "cear_tf.cli.bench", "--attack_logit_noise=-1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--attack_logit_noise must be numbers >= 0" in proc.stderr


def _benchmark_script(name):
    """A script of benchmarks/ (outside the package) as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks",
                                                                       f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv1_formulations_compute_the_same_layer():
    bench = _benchmark_script("conv1_formulations")
    out = bench.conv1_formulations(m=2, batch=4, repeats=1, calls=1)
    assert out["outputs"] == 12
    assert set(out["seconds"]) == {"conv2d", "extract_patches + matmul",
                                   "25 shifted multiply-adds", "space-to-depth 3x3 conv"}
    # every formulation is the same layer: float rounding apart from tf.nn.conv2d
    assert all(d < 1e-4 for d in out["deviation"].values()), out["deviation"]
    assert all(len(t) == 1 and t[0] > 0 for t in out["seconds"].values())


def _bisection_projection(v):
    lo, hi = v.min() - 1, v.max()
    for _ in range(200):
        theta = (lo + hi) / 2
        if np.maximum(v - theta, 0).sum() > 1:
            lo = theta
        else:
            hi = theta
    return np.maximum(v - (lo + hi) / 2, 0)


def test_gm_projection_benchmark_projects_and_agrees_with_the_library():
    bench = _benchmark_script("gm_projection")
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 7)) * 2
    p = bench.project_to_simplex(tf.constant(v)).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert (p >= 0).all()
    np.testing.assert_allclose(p, np.stack([_bisection_projection(r) for r in v]), atol=1e-9)
    q = rng.dirichlet(np.ones(7), size=10)  # points on the simplex stay put
    np.testing.assert_allclose(bench.project_to_simplex(tf.constant(q)).numpy(), q, atol=1e-12)
    # Weiszfeld iterates never leave the simplex, so the projection changes nothing but
    # rounding: the same aggregates, and the same argmax on every draw.
    batches = [tf.constant(rng.dirichlet(np.full(10, 0.3), size=(5, 200)).astype(np.float32))
               for _ in range(3)]
    out = bench.compare(batches, repeats=1)
    assert out["draws"] == 600
    assert out["argmax_differs"] == 0
    assert out["max_abs_difference"] < 1e-5
    assert set(out["seconds"]) == {"projected", "cear_tf"}


def test_pytorch_reference_names_its_missing_dependency_or_measures():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "benchmarks/pytorch_reference.py", "--archs=lenet5",
                           "--num_members=2", "--repeats=1", "--draws=500"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    try:
        import torch  # noqa: F401
    except ImportError:
        assert proc.returncode != 0
        assert "torch is not installed (pip install '.[bench]')" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| lenet5 | 2 x 500 @ " in proc.stdout
