"""Functional tf_keras classifiers (TF-MOT wraps only Sequential/Functional Keras 2 models).

Every model ends in a Dense layer named "classifier" that outputs logits; pruning scopes refer to that name. The
classifier computes in float32 whatever the global dtype policy: under mixed precision the logits, the softmax and
the loss stay float32 (Keras' rule for mixed-precision outputs).
"""

import tf_keras as keras

from pie.errors import PieError

CLASSIFIER = "classifier"


def _l2(weight_decay):
  # Keras' l2(c) adds c * sum(w^2); the usual "weight decay wd" is wd/2 * sum(w^2).
  return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def small_cnn(input_shape, num_classes, filters=(8, 16), hidden=32, weight_decay=0.0, pool_each=False):
  """Conv-conv-maxpool-dense CNN for small images: the embedded digits (8x8), Fashion-MNIST (28x28).

  pool_each: a 2x2 max-pool after every convolution instead of one after the last: a quarter of the next layer's cost
    per pooling, what keeps a 28x28 population trainable on a laptop.
  """
  inputs = keras.Input(shape=input_shape, name="image")
  x = inputs
  for i, f in enumerate(filters):
    x = keras.layers.Conv2D(
        f, 3, padding="same", activation="relu", kernel_regularizer=_l2(weight_decay), name=f"conv{i + 1}"
    )(x)
    if pool_each and i + 1 < len(filters):
      x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
  x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  if hidden:
    x = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=_l2(weight_decay), name="hidden")(x)
  outputs = keras.layers.Dense(num_classes, kernel_regularizer=_l2(weight_decay), name=CLASSIFIER, dtype="float32")(x)
  return keras.Model(inputs, outputs, name="small_cnn")


def _bn(name, momentum, epsilon, zero_gamma=False):
  return keras.layers.BatchNormalization(
      momentum=momentum, epsilon=epsilon, name=name, gamma_initializer="zeros" if zero_gamma else "ones"
  )


def _conv(filters, kernel, strides, weight_decay, name):
  return keras.layers.Conv2D(
      filters,
      kernel,
      strides=strides,
      padding="same",
      use_bias=False,
      kernel_initializer="he_normal",
      kernel_regularizer=_l2(weight_decay),
      name=name,
  )


def _basic_block(x, filters, strides, name, weight_decay, bn_momentum, bn_epsilon):
  """He et al.'s basic block (3x3-3x3), a 1x1 projection shortcut where the shape changes, zero-init last gamma."""
  shortcut = x
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv(filters, 1, strides, weight_decay, f"{name}_proj")(x)
    shortcut = _bn(f"{name}_proj_bn", bn_momentum, bn_epsilon)(shortcut)
  y = _conv(filters, 3, strides, weight_decay, f"{name}_conv1")(x)
  y = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", bn_momentum, bn_epsilon)(y))
  y = _conv(filters, 3, 1, weight_decay, f"{name}_conv2")(y)
  y = _bn(f"{name}_bn2", bn_momentum, bn_epsilon, zero_gamma=True)(y)
  return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def _pooled_classifier(x, num_classes, weight_decay, **dense_kwargs):
  """Global average pooling and the classifier, whose logits stay float32 under a mixed-precision policy."""
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return keras.layers.Dense(
      num_classes, kernel_regularizer=_l2(weight_decay), name=CLASSIFIER, dtype="float32", **dense_kwargs
  )(x)


def _stem(inputs, filters, kernel, strides, weight_decay, bn_momentum, bn_epsilon, pool):
  x = _conv(filters, kernel, strides, weight_decay, "stem_conv")(inputs)
  x = keras.layers.ReLU(name="stem_relu")(_bn("stem_bn", bn_momentum, bn_epsilon)(x))
  return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x) if pool else x


def cifar_resnet(input_shape, num_classes, depth=20, width=1, weight_decay=5e-4, bn_momentum=0.9, bn_epsilon=1e-5):
  """He et al.'s CIFAR ResNet (depth 6n+2: 20, 32, 56, ...), widened by `width` (a wide ResNet when > 1).

  Downsampling shortcuts are 1x1 projections, so that pruning covers them as in the paper.
  """
  if (depth - 2) % 6:
    raise PieError(f"cifar_resnet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
  blocks = (depth - 2) // 6
  inputs = keras.Input(shape=input_shape, name="image")
  x = _stem(inputs, 16 * width, 3, 1, weight_decay, bn_momentum, bn_epsilon, pool=False)
  for stage, filters in enumerate((16 * width, 32 * width, 64 * width)):
    for block in range(blocks):
      strides = 2 if stage > 0 and block == 0 else 1
      x = _basic_block(x, filters, strides, f"stage{stage + 1}_block{block + 1}", weight_decay, bn_momentum, bn_epsilon)
  outputs = _pooled_classifier(x, num_classes, weight_decay)
  return keras.Model(inputs, outputs, name=f"resnet{depth}x{width}")


def resnet50(input_shape, num_classes, weight_decay=1e-4, bn_momentum=0.9, bn_epsilon=1e-5):
  """ResNet-50 (v1.5: stride in the 3x3 conv) with the paper's BN settings and zero-init gamma per block."""
  inputs = keras.Input(shape=input_shape, name="image")
  x = _stem(inputs, 64, 7, 2, weight_decay, bn_momentum, bn_epsilon, pool=True)
  for stage, (filters, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
    for block in range(blocks):
      name = f"stage{stage + 1}_block{block + 1}"
      strides = 2 if stage > 0 and block == 0 else 1
      shortcut = x
      if block == 0:
        shortcut = _conv(filters * 4, 1, strides, weight_decay, f"{name}_proj")(x)
        shortcut = _bn(f"{name}_proj_bn", bn_momentum, bn_epsilon)(shortcut)
      y = _conv(filters, 1, 1, weight_decay, f"{name}_conv1")(x)
      y = keras.layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1", bn_momentum, bn_epsilon)(y))
      y = _conv(filters, 3, strides, weight_decay, f"{name}_conv2")(y)
      y = keras.layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2", bn_momentum, bn_epsilon)(y))
      y = _conv(filters * 4, 1, 1, weight_decay, f"{name}_conv3")(y)
      y = _bn(f"{name}_bn3", bn_momentum, bn_epsilon, zero_gamma=True)(y)
      x = keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))
  outputs = _pooled_classifier(
      x, num_classes, weight_decay, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01)
  )
  return keras.Model(inputs, outputs, name="resnet50")


def resnet18(input_shape, num_classes, width=64, weight_decay=1e-4, bn_momentum=0.9, bn_epsilon=1e-5):
  """ResNet-18 (He et al. 2016): a 7x7 stem, four stages of two basic blocks (3x3-3x3) with `width` x 1, 2, 4, 8
  filters, 1x1 projection shortcuts where the shape changes, zero-init gamma per block; the model of the CelebA study
  of Hooker et al. 2020 (configs/celeba_blond.py)."""
  inputs = keras.Input(shape=input_shape, name="image")
  x = _stem(inputs, width, 7, 2, weight_decay, bn_momentum, bn_epsilon, pool=True)
  for stage in range(4):
    for block in range(2):
      strides = 2 if stage > 0 and block == 0 else 1
      x = _basic_block(
          x, width * 2**stage, strides, f"stage{stage + 1}_block{block + 1}", weight_decay, bn_momentum, bn_epsilon
      )
  outputs = _pooled_classifier(x, num_classes, weight_decay)
  return keras.Model(inputs, outputs, name="resnet18")


MODELS = {"small_cnn": small_cnn, "cifar_resnet": cifar_resnet, "resnet18": resnet18, "resnet50": resnet50}


def build_model(model_config, input_shape, num_classes):
  """The model named by `model_config.name`, with `model_config.kwargs` passed to its builder."""
  if model_config.name not in MODELS:
    raise PieError(f"unknown model {model_config.name!r} (config.model.name): choose one of {sorted(MODELS)}")
  kwargs = dict(model_config.get("kwargs", {}))
  return MODELS[model_config.name](tuple(input_shape), num_classes, **kwargs)


def input_shape_for(info, data_config):
  """The model input shape: the raw shape, resized to data_config.image_size when set."""
  image_size = data_config.get("image_size")
  channels = info.image_shape[-1] or 3
  if image_size:
    return (image_size, image_size, channels)
  if None in tuple(info.image_shape):
    raise PieError(
        f"dataset {info.name!r} has images of varying size {tuple(info.image_shape)}: " "set config.data.image_size"
    )
  return tuple(info.image_shape)
