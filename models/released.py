"""The MNIST network of the authors' released code (tailabTMU/CEAR, MNIST/TrainMnist.py).

The paper's text says LeNet5; the released code trains this 4-conv CNN instead:
  conv 3x3x32 -> conv 3x3x64 -> max-pool 2 -> conv 3x3x64 -> conv 3x3x64 -> max-pool 2
  -> dense 128 -> dense 64 -> dense K, ReLU throughout, valid padding;
232,778 parameters on 28x28x1 input with K = 10. The released network ends in a softmax;
this one returns logits (the member contract), which changes no prediction.
"""

from keras import layers


def released_mnist_cnn(inputs, num_classes: int):
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv3")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense1")(x)
    x = layers.Dense(64, activation="relu", name="dense2")(x)
    return layers.Dense(num_classes, name="logits")(x)
