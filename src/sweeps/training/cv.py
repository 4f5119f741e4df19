"""k-fold cross-validation of one configuration (`cv.folds=5`).

The folds split all training data (training + validation split together). Each fold trains a
fresh model and is logged as a child run of the job's run (`fold 0`, `fold 1`, ...), with its
per-epoch curves; the job's run gets the mean and the spread (standard deviation) of the folds'
final validation metrics as `cv_val_loss_mean`, `cv_val_loss_std`, `cv_val_accuracy_mean`, ...
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from omegaconf import DictConfig

from sweeps import backends
from sweeps.tracking import tags
from sweeps.training.callbacks import JobEpochs
from sweeps.config.metrics import VALIDATION_METRICS
from sweeps.training.data import Dataset
from sweeps.training.fitting import fit, new_model
from sweeps.tracking import Tracker


def fold_indices(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (train, validation) index pairs, as scikit-learn's KFold."""
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(n)))


def cross_validate(cfg: DictConfig, data: Dataset, tracker: Tracker, job_run_id: str) -> dict:
    """Train one model per fold (runs nested under `job_run_id`); returns mean/std of val metrics."""
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    finals: dict[str, list[float]] = {}
    for k, (train_idx, val_idx) in enumerate(fold_indices(len(x), cfg.cv.folds, cfg.seed)):
        fold = replace(data, x_train=x[train_idx], y_train=y[train_idx], x_val=x[val_idx], y_val=y[val_idx])
        with tracker.job_run(f"fold {k}", job_run_id, {tags.KIND: "fold", tags.FOLD: str(k)}) as run:
            backends.set_seed(cfg.seed + 1 + k)
            model = new_model(cfg, fold)
            logger = JobEpochs(run.info.run_id, len(train_idx), monitor=cfg.early_stopping.monitor,
                               client=tracker.client)
            fit(model, fold, cfg, logger)
        for key in VALIDATION_METRICS:
            if logger.history.get(key):
                finals.setdefault(key, []).append(logger.history[key][-1])
    summary = {}
    for key, values in finals.items():
        summary[f"cv_{key}_mean"] = float(np.mean(values))
        summary[f"cv_{key}_std"] = float(np.std(values))
    return summary
