"""Plumbing shared by every job: lazy imports, output locks, progress lines, tf.distribute strategies."""
