"""Throughput measurements behind `python -m cear_tf.cli.bench` (docs/performance.md): ratios measured in one process, variants interleaved."""
