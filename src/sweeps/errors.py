"""The errors a user can fix. Each message names the key or file and says how to fix it."""


class SweepsError(Exception):
    """Base class: caught at the command line and printed as one line, without a traceback."""


class ConfigError(SweepsError):
    """A config value is out of range or inconsistent."""


class DataError(SweepsError):
    """A dataset file is missing, corrupt or cannot be downloaded."""


class TrackingError(SweepsError):
    """The MLflow tracking store cannot be reached or written."""


class DivergedError(SweepsError):
    """Training produced a NaN or infinite loss."""


class CompareError(SweepsError):
    """A sweep, experiment, metric or key asked for by `sweeps.compare` is not in the store."""


class StoreUnavailable(BaseException):
    """The tracking store stopped answering (server gone, disk full) while a sweep ran.

    Not an `Exception` on purpose: Hydra's job runner catches `Exception` per job and starts the
    next one, but every later job would fail the same way after the same wait; this stops the sweep.
    """
