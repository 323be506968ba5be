"""LeNet-5 for MNIST, the paper's MNIST network, and the larger "LeNet" of the randomized
smoothing literature, the usual Gaussian baseline on MNIST.

Variant (the common modern form of LeCun et al. 1998, as in Keras LeNet-5 tutorials):
  conv 5x5x6 (same padding, ReLU) -> max-pool 2 -> conv 5x5x16 (valid, ReLU) -> max-pool 2
  -> dense 120 (ReLU) -> dense 84 (ReLU) -> dense K (logits).
On 28x28x1 input with K = 10 this has 61,706 parameters, the same as the classic
32x32 LeNet-5 with fully connected C3 and parameter-free subsampling. The 1998 original
(~60,000) differs in C3's partial connectivity (1,516 vs 2,416 weights), trainable
subsampling and scaled tanh; those do not change what the network can represent here and
the ReLU/max-pool form trains to >99% in a few epochs.
"""

from keras import layers


def lenet5(inputs, num_classes: int):
    x = layers.Conv2D(6, 5, padding="same", activation="relu", name="c1")(inputs)
    x = layers.MaxPooling2D(2, name="s2")(x)
    x = layers.Conv2D(16, 5, padding="valid", activation="relu", name="c3")(x)
    x = layers.MaxPooling2D(2, name="s4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(120, activation="relu", name="c5")(x)
    x = layers.Dense(84, activation="relu", name="f6")(x)
    return layers.Dense(num_classes, name="logits")(x)


def literature_lenet(inputs, num_classes: int):
    """The "LeNet" with which MNIST is certified in the randomized-smoothing literature
    (Salman et al. 2019, Jeong & Shin 2020, Zhai et al. 2020; their `archs/lenet.py`):
    conv 5x5x20 (valid, ReLU) -> max-pool 2 -> conv 5x5x50 (valid, ReLU) -> max-pool 2 ->
    dense 500 (ReLU) -> dense K (logits). 431,080 parameters on 28x28x1 with K = 10 (7x the
    paper's LeNet-5). Those papers feed it unnormalised pixels (`--nonormalize` here)."""
    x = layers.Conv2D(20, 5, padding="valid", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, padding="valid", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, activation="relu", name="fc1")(x)
    return layers.Dense(num_classes, name="logits")(x)
