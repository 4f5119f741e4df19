"""One job, from config to a finished run: the data (`data`), the model under study (`models`, with
`regularizers`), the Keras steps (`fitting`, with one callback per concern in `callbacks`), per-epoch
checkpoints (`checkpoint`), k-fold cross-validation (`cv`) and the job as a list of steps (`job`,
handed its `context` by a launcher). Import the modules themselves: TensorFlow loads with them.
"""
