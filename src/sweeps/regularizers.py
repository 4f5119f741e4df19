"""Regularization pieces: weight/activity penalties and dropout layers, and where they go."""

from __future__ import annotations

from typing import Optional, Sequence

import keras

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


def selected(layers: Optional[Sequence[int]], index: int) -> bool:
    """Whether hidden layer `index` is listed (None lists every layer)."""
    return layers is None or index in layers


def dense_kwargs(kind: RegKind, target: RegTarget, rate: float, layers, index: int) -> dict:
    """The regularizer argument for hidden layer `index`, or nothing if it is not selected."""
    reg = penalty(kind, rate)
    if reg is None or not selected(layers, index):
        return {}
    return {TARGET_ARG[target]: reg}
