"""LeNet-5 for MNIST, the paper's MNIST network.

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
