"""ResNet-18 (He et al. 2016, basic blocks [2, 2, 2, 2], 64-512 filters) for 64x64 TinyImageNet.

Stem: a 3x3 stride-1 convolution with 64 filters and no max-pool, the usual adaptation
for small images (the ImageNet 7x7/2 conv + 3x3/2 max-pool would shrink 64x64 to 16x16
before the first block). Projection shortcuts (1x1 conv + BN, option B) where shape
changes, as in torchvision. With 200 classes: 11,271,432 trainable parameters
(torchvision's ResNet-18 is 11,689,512 with the 7x7 stem and 1000 classes).
"""

from keras import layers


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 kernel_initializer="he_normal", name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet18(inputs, num_classes: int):
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, name=f"stage{stage + 1}_block{block + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(num_classes, name="logits")(x)
