"""Regularization pieces: weight/activity penalties, dropout layers, the max-norm constraint, label
smoothing, and where they go (weight decay is the optimizer's: `models.make_optimizer`)."""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import ops

from sweeps.config import DropoutType, RegKind, RegTarget

# Keras' Dense argument that receives the penalty, per `reg.target`.
TARGET_ARG = {
    RegTarget.kernel: "kernel_regularizer",
    RegTarget.activity: "activity_regularizer",
    RegTarget.bias: "bias_regularizer",
}


def penalty(kind: RegKind, rate: float) -> Optional[keras.regularizers.Regularizer]:
    """L1, L2 or both with strength `rate`; None for `none`."""
    if kind == RegKind.l1:
        return keras.regularizers.L1(rate)
    if kind == RegKind.l2:
        return keras.regularizers.L2(rate)
    if kind == RegKind.l1_l2:
        return keras.regularizers.L1L2(l1=rate, l2=rate)
    return None


def dropout(kind: DropoutType, rate: float, name: str) -> keras.layers.Layer:
    """`Dropout` zeroes units; `GaussianDropout` multiplies them by N(1, rate / (1 - rate))."""
    if kind == DropoutType.gaussian:
        return keras.layers.GaussianDropout(rate, name=name)
    return keras.layers.Dropout(rate, name=name)


# Variables decoupled weight decay leaves alone (matched in their names, plain and packed models alike).
NOT_DECAYED = ["bias", "gamma", "beta"]


def constraint_kwargs(max_norm: Optional[float], axis: int | list[int] = 0) -> dict:
    """Max-norm (Srivastava et al. 2014, with dropout): after each step, every unit's incoming weight
    vector is scaled back to L2 norm `max_norm`: a column of a Dense `[in, out]` kernel (axis 0), a
    filter of a Conv2D kernel `[h, w, in, out]` (axes [0, 1, 2])."""
    return {} if max_norm is None else {"kernel_constraint": keras.constraints.MaxNorm(max_norm, axis=axis)}


# Not registered with Keras: MLflow pickles every globally registered object beside every logged model;
# a model trained with this loss is logged compiled with Keras' own (`models.portable`).
def smoothed_sparse_crossentropy(y_true, y_pred, label_smoothing: float = 0.0):
    """Keras' categorical cross-entropy with `label_smoothing` on integer labels (Keras 3's sparse
    cross-entropy has no smoothing): the target is (1 - s) one-hot + s / classes."""
    labels = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), ops.shape(y_pred)[-1])
    return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=label_smoothing)


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """`smoothed_sparse_crossentropy` as a Keras loss."""

    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return smoothed_sparse_crossentropy(y_true, y_pred, self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def smoothed_loss(label_smoothing: float) -> tuple[keras.losses.Loss, keras.metrics.Metric]:
    """The loss and its `data_loss` metric (the same function: `loss - data_loss` stays the penalty)."""
    return (SmoothedSparseCrossentropy(label_smoothing),
            keras.metrics.MeanMetricWrapper(smoothed_sparse_crossentropy, name="data_loss",
                                            label_smoothing=label_smoothing))


def selected(layers: Optional[Sequence[int]], index: int) -> bool:
    """Whether hidden layer `index` is listed (None lists every layer)."""
    return layers is None or index in layers


def dense_kwargs(kind: RegKind, target: RegTarget, rate: float, layers, index: int) -> dict:
    """The regularizer argument for hidden layer `index`, or nothing if it is not selected."""
    reg = penalty(kind, rate)
    if reg is None or not selected(layers, index):
        return {}
    return {TARGET_ARG[target]: reg}
