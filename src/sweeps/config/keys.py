"""Which config keys change what is trained: the one list that the config hash (resume), packing
and the comparison's swept params read. A new config key that does not change the result goes
here once, under the group that says how a pack treats it.
"""

from __future__ import annotations

# Keys that change neither the model nor its training, but that a pack's jobs share: one store
# (`tracking`), one process's threads, one `fit` call (`steps_per_execution`), one grid expansion
# (`repeat`).
SHARED_BY_A_PACK = ("tracking", "threads", "steps_per_execution", "repeat")
# Keys that change neither and may differ between the members of one pack: each member ranks by
# its own metric, resumes on its own, reports to its own trial (`pack.MemberEpochs`); a job
# that checkpoints is never packed (`launcher.why_alone`).
FREE_IN_A_PACK = ("optimized_metric", "resume", "search", "checkpoint")
# Out of the config hash: a finished run is found again whatever these say.
NOT_TRAINING = SHARED_BY_A_PACK + FREE_IN_A_PACK

# What may differ between the jobs of one pack (the packed model trains each member its own
# way); every other key that changes training must be the same.
PACKABLE = ("reg", "rate", "dropout", "dropout_type", "dropout_layers", "seed", "max_norm", "label_smoothing",
            "input_noise")
PACKABLE_OPTIMIZER = ("weight_decay",)  # of `optimizer`: each member decays its own kernels (`PackedMLP`)

# Params a job logs that follow from the others (the model's and the data's sizes).
SIZE_PARAMS = ("n_params", "n_train", "n_val", "n_test")


def derived_param(name: str) -> bool:
    """Whether a logged param follows from others (`n_train`) or does not change training
    (`tracking.uri`), so a comparison never shows it as a swept key (`rate` is not such a param)."""
    return name in SIZE_PARAMS or name.split(".")[0] in NOT_TRAINING
