"""cear_tf: Certified Ensemble Adversarial Robustness (CEAR) in TensorFlow/Keras.

Importing the package does nothing but define it: no argv is read, no file descriptor is
touched, TensorFlow is imported by the modules that use it. The command-line entry points
quiet TensorFlow's start-up banners themselves (cear_tf.cli.launch.run).
"""

__version__ = "0.1.0"
