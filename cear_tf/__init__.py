"""cear_tf: Certified Ensemble Adversarial Robustness (CEAR) in TensorFlow/Keras."""

__version__ = "0.1.0"
