"""Mitigations of compression's harm as Keras training pieces: their losses, the distillation model, class weights.

The registry (`pie.variants`, `MITIGATIONS`) says which mitigation a population trains with and what it needs; this
module holds what TensorFlow runs. Every loss here returns one value per example whose mean over the batch is the
documented loss, so that Keras' default reduction (the mean over the batch) gives it exactly:

  distill         (1 - w) * CE(y, s) + w * T^2 * KL(softmax(t / T) || softmax(s / T)), s the student's logits, t the
                  teacher's (a dense model), T the temperature (Hinton et al., 2015).
  class_reweight  w[y] * CE(y, s): per-class weights from the per-class error (`class_weights`).
  equalized_loss  CE(y, s) + lambda * sum_c p_c (L_c - L)^2 over the batch's classes, p_c the batch's share of class c,
                  L_c its mean CE and L the batch's mean CE: a penalty that pulls the classes' losses together, after
                  Tran et al., "Pruning has a disparate impact on model accuracy" (NeurIPS 2022).

A distilled model is trained through an outer Keras model whose output is the student's logits and the teacher's side
by side (`with_teacher`): the student keeps its compression wrappers, which TF-MOT's callbacks find in the nested
model, and the exported model is the student alone.
"""

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pie.errors import PieError


def _cross_entropy(y_true, logits, label_smoothing):
  return keras.losses.categorical_crossentropy(y_true, logits, from_logits=True, label_smoothing=label_smoothing)


def distillation_values(y_true, student_logits, teacher_logits, weight, temperature, label_smoothing=0.0):
  """Per-example distillation loss: (1 - w) CE(y, s) + w T^2 KL(softmax(t/T) || softmax(s/T))."""
  teacher = tf.nn.softmax(teacher_logits / temperature, axis=-1)
  log_teacher = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
  log_student = tf.nn.log_softmax(student_logits / temperature, axis=-1)
  kl = tf.reduce_sum(teacher * (log_teacher - log_student), axis=-1)
  hard = _cross_entropy(y_true, student_logits, label_smoothing)
  return (1.0 - weight) * hard + weight * temperature**2 * kl


class DistillationLoss(keras.losses.Loss):
  """The distillation loss of a model whose output is [student logits, teacher logits] (`with_teacher`)."""

  def __init__(self, num_classes, weight, temperature, label_smoothing=0.0, name="distillation"):
    super().__init__(name=name)
    self.num_classes, self.weight, self.temperature = int(num_classes), float(weight), float(temperature)
    self.label_smoothing = float(label_smoothing)

  def call(self, y_true, y_pred):
    student, teacher = y_pred[:, : self.num_classes], y_pred[:, self.num_classes :]
    return distillation_values(y_true, student, teacher, self.weight, self.temperature, self.label_smoothing)


def with_teacher(student, teacher):
  """A Keras model that outputs the student's logits and the (frozen) teacher's, concatenated: the model a distilled
  student is fitted through. Its checkpoint holds both; the teacher is never trained."""
  teacher = keras.Model(teacher.inputs, teacher.outputs, name="teacher")  # its own name beside the student's
  teacher.trainable = False
  inputs = keras.Input(shape=student.input_shape[1:], dtype=student.inputs[0].dtype, name="images")
  outputs = keras.layers.Concatenate(axis=-1, name="student_and_teacher")(
      [student(inputs), teacher(inputs, training=False)]
  )
  return keras.Model(inputs, outputs, name=f"{student.name}_distilled")


def student_accuracy(num_classes):
  """The "accuracy" metric of a distilled model: top-1 of the student's half of the output."""

  def accuracy(y_true, y_pred):
    return keras.metrics.categorical_accuracy(y_true, y_pred[:, :num_classes])

  return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


class ClassWeightedLoss(keras.losses.Loss):
  """Cross-entropy weighted by the class of each example's label; the weights are a variable (updated per epoch in
  that mode)."""

  def __init__(self, class_weights, label_smoothing=0.0, name="class_weighted_crossentropy"):
    super().__init__(name=name)
    self.class_weights = tf.Variable(np.asarray(class_weights, np.float32), trainable=False, name="class_weights")
    self.label_smoothing = float(label_smoothing)

  def call(self, y_true, y_pred):
    weights = tf.reduce_sum(tf.cast(y_true, tf.float32) * self.class_weights, axis=-1)
    return weights * _cross_entropy(y_true, y_pred, self.label_smoothing)


def equalized_values(y_true, logits, penalty, label_smoothing=0.0):
  """Per-example equalized loss: CE_i + lambda * sum_c p_c (L_c - L)^2 (the penalty repeated on every example, so the
  batch mean is CE + lambda * penalty). Classes absent from the batch have p_c = 0."""
  ce = _cross_entropy(y_true, logits, label_smoothing)
  onehot = tf.cast(y_true, ce.dtype)
  count = tf.reduce_sum(onehot, axis=0)
  batch = tf.cast(tf.shape(ce)[0], ce.dtype)
  share = count / batch
  class_loss = tf.math.divide_no_nan(tf.linalg.matvec(onehot, ce, transpose_a=True), count)
  mean = tf.reduce_mean(ce)
  spread = tf.reduce_sum(share * tf.square(class_loss - mean))
  return ce + penalty * spread


class EqualizedLoss(keras.losses.Loss):
  """Cross-entropy plus the per-class loss-equalizing penalty (`equalized_values`)."""

  def __init__(self, penalty, label_smoothing=0.0, name="equalized_loss"):
    super().__init__(name=name)
    self.penalty, self.label_smoothing = float(penalty), float(label_smoothing)

  def call(self, y_true, y_pred):
    return equalized_values(y_true, y_pred, self.penalty, self.label_smoothing)


def class_weights(error, class_count, smoothing, power=1.0):
  """The class_reweight rule: harder classes weigh more, and the mean weight over the training examples is 1.

    raw_c = (error_c + smoothing) ** power,   w_c = raw_c / sum_k (n_k / N) raw_k

  error: per-class error rate (1 - recall) of the source models on the training split, float [C]; class_count: the
  training examples per class, [C]. A class without training examples gets weight 0 (it never occurs).
  """
  error = np.asarray(error, np.float64)
  count = np.asarray(class_count, np.float64)
  if error.shape != count.shape or error.ndim != 1:
    raise PieError(f"error and class_count must both be [num_classes], got shapes {error.shape} and {count.shape}")
  if smoothing <= 0 or power <= 0:
    raise PieError(
        f"the class_reweight smoothing and power must be > 0, got {smoothing} and {power}",
        parameter="mitigation_params",
    )
  raw = np.where(count > 0, (np.nan_to_num(error) + smoothing) ** power, 0.0)
  return raw / np.sum(count / count.sum() * raw)


def per_class_error(predict, batches, num_classes):
  """Per-class error rate (1 - recall) of a model on batches of (images, labels), and the examples per class.

  `predict(images)` returns logits; the argmax is the prediction."""
  right = np.zeros(num_classes)
  count = np.zeros(num_classes)
  for images, labels in batches:
    predicted = np.asarray(predict(images)).argmax(axis=-1)
    labels = np.asarray(labels)
    count += np.bincount(labels, minlength=num_classes)
    right += np.bincount(labels, weights=(predicted == labels), minlength=num_classes)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, 1.0 - right / count, np.nan), count


class ClassWeightUpdate(keras.callbacks.Callback):
  """Recomputes the class weights at the start of every epoch after the first, from the model being trained: its
  per-class error on the training split. The weights of epoch e depend only on the model's state at its start, so a
  run resumed at epoch e computes exactly the weights an uninterrupted one does."""

  def __init__(self, loss, student, batches, class_count, smoothing, power, log=None):
    super().__init__()
    self.loss, self.student, self.batches = loss, student, batches
    self.class_count, self.smoothing, self.power, self.log = class_count, smoothing, power, log

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == 0:
      return
    error, _ = per_class_error(
        lambda images: self.student(images, training=False), self.batches(), len(self.class_count)
    )
    weights = class_weights(error, self.class_count, self.smoothing, self.power)
    self.loss.class_weights.assign(weights.astype(np.float32))
    if self.log:
      self.log(f"epoch {epoch + 1}: class weights {np.round(weights, 3).tolist()}")
