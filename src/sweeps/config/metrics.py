"""Every metric `sweeps` logs, ranks by or shows, and which way is better: decided here only.

A job logs, every epoch, Keras' `KERAS_EPOCH` quantities on the training data and on the
validation data (`val_` prefix), and our `penalty`; at its end, the last epoch's values on the
training data (`final_train_`), the test data (`test_`), the best validation values (`best_val_`),
the generalization gap, the training time and the best epoch; with cross-validation, the folds'
`cv_val_<quantity>_mean`/`_std`. A new metric goes here once: the config checks, the progress
lines, the report's curves and the comparison's columns read these names.
"""

from __future__ import annotations

import re

# Computed by Keras every epoch, on the training data and (with `val_`) on the validation data.
# `data_loss` is the loss without the regularization penalty (`models.compile_model`).
KERAS_EPOCH = ("data_loss", "loss", "accuracy", "mae")
# Ours, every epoch: the penalty the regularizers added to the loss (`callbacks.penalty`).
OURS_EPOCH = ("penalty",)

# The metric that ranks a sweep's jobs unless told otherwise (`optimized_metric`, compare's --metric):
# the validation loss without the regularization penalty. Keras' `val_loss` includes the penalty,
# so ranking on it favours weak regularization by construction.
RANK_METRIC = "val_data_loss"
# The validation metrics a job logs every epoch (as many as its task has), the ranking one first.
VALIDATION_METRICS = tuple(f"val_{q}" for q in KERAS_EPOCH)
# The per-epoch keys the report's curves draw, each training quantity beside its validation one.
CURVES = tuple(k for q in ("data_loss", *OURS_EPOCH, "loss", "accuracy", "mae")
               for k in ((q, f"val_{q}") if q in KERAS_EPOCH else (q,)))
# End-of-run results the comparison shows (after the ranking metric and the objectives).
END_METRICS = ("final_train_data_loss", "test_data_loss", "final_train_loss", "test_loss", "test_accuracy", "test_mae",
               "generalization_gap", "train_time_s")
# The progress lines: shown every epoch and at a job's end, after the ranking metric.
SHOWN_EVERY_EPOCH = ("data_loss", "penalty", "val_accuracy", "val_mae")
SHOWN_AT_THE_END = ("test_accuracy", "test_mae")

_QUANTITY = "|".join(KERAS_EPOCH)
# What `early_stopping.monitor` may name: metrics Keras computes every epoch.
EPOCH_METRIC = re.compile(rf"^(val_)?({_QUANTITY})$")
# What `optimized_metric` may name: per-epoch values (last epoch) and end-of-run results.
RESULT_METRIC = re.compile(rf"^((val_|test_|final_train_|best_val_)?({_QUANTITY})|{'|'.join(OURS_EPOCH)}"
                           rf"|generalization_gap|train_time_s|best_epoch"
                           rf"|cv_val_({_QUANTITY})_(mean|std))$")
# A kernel's statistics at the last epoch (`callbacks.weight_stats`), the other side of a trade-off,
# and the count of weights that matter over every kernel.
WEIGHT_METRIC = re.compile(r"^([A-Za-z0-9_.-]+/(kernel_l1|kernel_l2|sparsity|rel_sparsity)|active_weights)$")


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics and sparsity are maximised; losses, errors, gaps, norms, counts and times
    minimised."""
    return any(word in metric for word in ("accuracy", "auc", "r2", "sparsity"))


def metric_direction(metric: str) -> str:
    """Optuna's name for the direction of `metric`."""
    return "maximize" if higher_is_better(metric) else "minimize"


def keras_mode(metric: str) -> str:
    """Keras' `mode` for a monitored metric (early stopping, the best epoch)."""
    return "max" if higher_is_better(metric) else "min"


def is_per_epoch(metric: str) -> bool:
    """Validation metrics are logged every epoch: the table shows their final and best value."""
    return metric.startswith("val_")
