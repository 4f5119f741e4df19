"""Every tag `sweeps` puts on an MLflow run, in one place (the store is how processes find each other)."""

KIND = "sweeps.kind"  # "job", "sweep" (a parent run) or "fold" (a cross-validation child)
SWEEP = "sweeps.sweep_id"  # on a job: parent run id of its sweep (on a parent: its own id)
SWEEP_DIR = "sweeps.sweep_dir"  # on a parent: Hydra's multirun folder, absolute (for reading; two sweeps may share it)
SWEEP_KEY = "sweeps.sweep_key"  # on a parent: the unique key its sweeper handed every job; how a job finds its parent
SWEPT = "sweeps.swept"  # on a parent: JSON list of the keys the sweep varies
COMMAND = "sweeps.command"  # on a parent: the sweep's overrides as typed (credentials redacted)
JOBS = "sweeps.jobs"  # on a parent: how many jobs the sweeper launched
OVERRIDES = "sweeps.overrides"  # on a job: JSON list of its overrides
HASH = "sweeps.config_hash"  # hash of the resolved config (see config.config_hash)
DATA_SOURCE = "sweeps.data_source"  # where the dataset was read from
ERROR = "sweeps.error"  # one-line reason a run FAILED or was KILLED
PID = "sweeps.pid"  # process that opened the run (to tell stale RUNNING runs)
HOST = "sweeps.host"  # host of that process
SLURM_JOB = "sweeps.slurm_job"  # on a job run inside a SLURM task: its id (`5_1`: array 5, task 1)
RAY_TASK = "sweeps.ray_task"  # on a job run inside a Ray task (hydra/launcher=ray): the task's id
RAY_NODE = "sweeps.ray_node"  # ... and the id of the Ray node it ran on
KERAS_BACKEND = "sweeps.keras_backend"  # on a job: the backend Keras ran on in its process (what `backend=` asked for)
DEVICES = "sweeps.cuda_visible_devices"  # on a run: the GPUs its process saw (`sweeps.sweeping.devices`), when set
STALE = "sweeps.stale"  # "true" on a run closed because its process was gone
RESUMED_FROM = "sweeps.resumed_from"  # on a reused job: the FINISHED run it stands for
RESUMED_SWEEP = "sweeps.resumed_sweep"  # on a reused job: the parent run of the sweep that trained it
REPORT_MISSING = "sweeps.report_missing"  # on a parent: report files that could not be saved (a full disk)
RESUMES = "sweeps.resumes"  # on a parent: comma-separated earlier parents it reused jobs from
STUDY = "sweeps.study"  # on a search's parent and trials: the Optuna study name
TRIAL = "sweeps.trial"  # on a trial's run: its Optuna trial number
FRONT = "sweeps.front"  # on a search of several objectives: comma-separated numbers of the trials on its front
CONTINUED_AT = "sweeps.continued_at_epoch"  # on a job requeued by SLURM: the checkpointed epoch(s) it went on after
PRUNED_AT = "sweeps.pruned_at_epoch"  # on a trial stopped by the pruner: the last epoch it trained
PACKED_WITH = "sweeps.packed_with"  # on a job of a packed sweep: JSON list of the run ids trained in the same model
FOLD = "sweeps.fold"  # on a cross-validation child: the fold number
PARENT = "mlflow.parentRunId"  # MLflow's own nesting tag
NOTE = "mlflow.note.content"  # MLflow's run description
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's source version tag
