"""A sweep: one parent run over its jobs (`parent`), the grid and Optuna sweepers (`grid`, `search`,
with `repeats`), the cluster launchers (`slurm`, `ray_launcher`), one device per worker (`devices`) and
the progress lines on the terminal (`progress`).
"""
