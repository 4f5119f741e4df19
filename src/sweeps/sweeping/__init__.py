"""A sweep: one parent run over its jobs (`parent`), the grid and Optuna sweepers (`grid`, `search`,
with `repeats`), the cluster launchers (`slurm`, `ray_launcher`) and one device per worker (`devices`).
"""
