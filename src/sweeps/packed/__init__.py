"""Packed sweeps: jobs that differ only in penalty, dropout or seed trained as one Keras model.
`launcher` groups a sweep's jobs (`hydra/launcher=packed`), `model` is the packed network, `pack` trains
a pack through the same job steps as one job (`training.job.begin`, `log_results`, `result_line`).
"""
