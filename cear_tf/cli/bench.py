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
  * peak         the fraction of the float32 matmul peak, measured right after each variant in
                 the same repeat, that the engine's counted FLOPs reach.
Variants run interleaved, once per repeat each (A B C ... A B C ...), so load changes hit all
alike; the table shows each ratio's median and min-max over repeats. The measurements are
cear_tf.performance's; the comparison with PyTorch and the conv1 experiments stand outside the
library, in benchmarks/ (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import platform

import numpy as np
from absl import app, flags

from cear_tf.cli import launch
from cear_tf.common.lazy import lazy_module
from cear_tf.config import choices

# Loaded when used, so --help answers without TensorFlow.
tf = lazy_module("tensorflow")
certification = lazy_module("cear_tf.performance.certification")
precision_lib = lazy_module("cear_tf.ensemble.precision")
steps = lazy_module("cear_tf.performance.steps")
timing = lazy_module("cear_tf.performance.timing")

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags this entry point reads, defined when it runs (launch.run), never on import."""
    flags.DEFINE_list("archs", ["lenet5", "resnet20", "resnet110"], "Architectures to measure.")
    flags.DEFINE_integer("num_members", 5, "Ensemble size.")
    flags.DEFINE_integer("repeats", 3, "Repeats of every measurement.")
    flags.DEFINE_integer("draws", 0, "Noise draws per measurement (0 = the architecture's default "
                         "in the" "performance SETTINGS, a few seconds each on 2 cores).")
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




def main(argv):
    launch.require(argv)
    unknown = [a for a in FLAGS.archs if a not in certification.SETTINGS]
    if unknown:
        raise app.UsageError(f"--archs: unknown {unknown}; allowed: {', '.join(certification.SETTINGS)}")
    try:
        precision_lib.check_precision(FLAGS.compare_precision, "--compare_precision")
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    results = [certification.measure(a, FLAGS.num_members, FLAGS.repeats, FLAGS.xla, FLAGS.compare_precision,
                       FLAGS.draws, FLAGS.naive) for a in FLAGS.archs]
    flags_cpu = timing.cpu_flags()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical "
          f"CPUs, TensorFlow {tf.__version__}; CPU flags: avx512_bf16={'avx512_bf16' in flags_cpu}, "
          f"amx_bf16={'amx_bf16' in flags_cpu}; xla={FLAGS.xla}; variants interleaved per "
          f"repeat, median (min-max) over {FLAGS.repeats} repeats")
    if results:
        low = FLAGS.compare_precision != "float32"
        print("| arch | M x draws @ batch | engine vs Keras loop, 4 aggregations | engine vs naive "
              "Keras | fused vs unfused engine | engine passes/s | "
              "% of matmul peak (same repeat) |" + (f" {FLAGS.compare_precision} vs float32 |"
                                                     if low else ""))
        print("|---|---|---|---|---|---|---|" + ("---|" if low else ""))
        for r in results:
            runs = r["runs"]
            best = "fused_1agg_s" if r["fused"] else "engine_1agg_s"

            def ratio(num, den, runs=runs):
                if num not in runs[0] or den not in runs[0]:
                    return "-"
                return timing.stats([x[num] / x[den] for x in runs]) + "x"

            passes = [r["members"] * r["draws"] / x[best] for x in runs]
            frac = [100 * p * r["flops_per_pass"] / x["peak"] for p, x in zip(passes, runs)]
            low_col = f" {ratio('engine_1agg_s', 'low_precision_1agg_s')} |" if low else ""
            print(f"| {r['arch']} | {r['members']} x {r['draws']} @ {r['batch']} | "
                  f"{ratio('keras_loop_4agg_s', 'engine_4agg_s')} | "
                  f"{ratio('naive_4agg_s', 'engine_4agg_s')} | "
                  f"{ratio('engine_1agg_s', 'fused_1agg_s')} | "
                  f"{np.median(passes):.0f} | {timing.stats(frac, 0)} |{low_col}")
    sweeps = {}
    if FLAGS.sweep_batches:
        batches = [int(b) for b in FLAGS.sweep_batches]
        print("\nengine passes/s by certify batch size (median, min-max over repeats)")
        print("| arch | " + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|" + "---|" * len(batches))
        for arch in FLAGS.archs:
            sweeps[arch] = certification.sweep_batches(arch, FLAGS.num_members, batches, FLAGS.repeats, FLAGS.draws)
            print(f"| {arch} | " + " | ".join(timing.stats(sweeps[arch][b], 0) for b in batches) + " |")
    trained = {}
    if FLAGS.train_batches:
        print(f"\ntraining {FLAGS.num_members} LeNet-5 students: fused in one step vs one after "
              f"another, student-images/s (median, min-max over repeats; interleaved)")
        print("| batch | one after another | fused | fused vs one after another | "
              "best vs best | teacher logits precomputed vs teacher per step: one after "
              "another / fused |")
        print("|---|---|---|---|---|---|")
        for b in (int(v) for v in FLAGS.train_batches):
            rows = steps.measure_training(FLAGS.num_members, b, FLAGS.repeats, FLAGS.train_steps)
            trained[b] = rows
            # A shared machine's slow spells last seconds, as long as one measurement here:
            # the fastest time of each variant is its unloaded speed.
            best = (min(r["separate_s"] for r in rows) / min(r["fused_s"] for r in rows))
            print(f"| {b} | {timing.stats([r['images'] / r['separate_s'] for r in rows], 0)} | "
                  f"{timing.stats([r['images'] / r['fused_s'] for r in rows], 0)} | "
                  f"{timing.stats([r['separate_s'] / r['fused_s'] for r in rows])}x | {best:.2f}x | "
                  f"{timing.stats([r['separate_teacher_s'] / r['separate_s'] for r in rows])}x / "
                  f"{timing.stats([r['fused_teacher_s'] / r['fused_s'] for r in rows])}x |")
    attacked = []
    if FLAGS.attack_logit_noise:
        print(f"\nattack steps (GM scores + input gradient, batch 100) on {FLAGS.num_members} "
              f"LeNet-5 members: fused vs one by one (median, min-max over repeats; interleaved)")
        print("| logit noise | one by one, steps/s | fused, steps/s | fused vs one by one |")
        print("|---|---|---|---|")
        for eps in (float(v) for v in FLAGS.attack_logit_noise):
            row = steps.measure_attack(FLAGS.num_members, eps, FLAGS.repeats)
            attacked.append(row)
            one, fused = row["seconds"]["one by one"], row["seconds"]["fused"]
            print(f"| {eps:g} | {timing.stats([row['calls'] / t for t in one], 1)} | "
                  f"{timing.stats([row['calls'] / t for t in fused], 1)} | "
                  f"{timing.stats([a / b for a, b in zip(one, fused)])}x |")
    checked = {}
    if FLAGS.input_check_images:
        checked = certification.measure_input_check(FLAGS.num_members, FLAGS.input_check_images,
                                      FLAGS.repeats, n=FLAGS.draws or 10_000)
        on, off = checked["seconds"]["checked"], checked["seconds"]["unchecked"]
        print(f"\ninput contract check (cear_tf.smoothing.input_contract): certify_batch of "
              f"{checked['images']} images, N = {checked['n']}, {checked['members']} LeNet-5 "
              f"members fused (median, min-max over repeats; interleaved)")
        print("| images/s checked | images/s unchecked | checked vs unchecked time | the check "
              "alone, per batch | its share of the unchecked time |")
        print("|---|---|---|---|---|")
        print(f"| {timing.stats([checked['images'] / t for t in on], 3)} | "
              f"{timing.stats([checked['images'] / t for t in off], 3)} | "
              f"{timing.stats([a / b for a, b in zip(on, off)], 4)}x | "
              f"{1e6 * checked['check_seconds']:.0f} us | "
              f"{100 * checked['check_seconds'] / np.median(off):.4f}% |")
    if FLAGS.outfile:
        with open(FLAGS.outfile, "w") as f:
            json.dump(dict(results=results, batch_sweep=sweeps, training=trained,
                           attack=attacked, input_check=checked), f, indent=2)


if __name__ == "__main__":
    launch.run(main, define_flags)
