"""The config: its schema (`schema`), the checks Hydra cannot express (`checks`), and what follows
from a composed config (`derived`: the ranking metric, the keys that apply, the hash). Two tables that
every layer reads live beside them: `keys` (which keys change what is trained) and `metrics` (every
metric and which way is better).

The names below are the package's public face; import them from here (`from sweeps.config import
validate`). Importing this package costs Hydra and OmegaConf only, no MLflow or TensorFlow.
"""

from sweeps.config.checks import ACTIVATIONS, check_overrides, check_task, validate
from sweeps.config.derived import applicable, config_hash, objectives, objectives_param, ranked_metric, to_plain
from sweeps.config.schema import (DATASETS, Backend, Config, DataConfig, DatasetName, DropoutType, OptimizerName, RegKind,
                                  RegTarget, Scale, Task, TrackingConfig, Validation, conf_dir, dotted_keys,
                                  register_configs)

__all__ = ["ACTIVATIONS", "check_overrides", "check_task", "validate", "applicable", "config_hash", "objectives",
           "objectives_param", "ranked_metric", "to_plain", "DATASETS", "Backend", "Config", "DataConfig", "DatasetName",
           "DropoutType", "OptimizerName", "RegKind", "RegTarget", "Scale", "Task", "TrackingConfig", "Validation",
           "conf_dir", "dotted_keys", "register_configs"]
