"""Plain Keras 64-32 SGD batch 32 on Fashion-MNIST, TensorFlow, one setting per process: s per epoch."""
import os
import subprocess
import sys
SCRIPT = r'''
import os, sys, time, json
import tensorflow as tf
intra, inter = int(sys.argv[1]), int(sys.argv[2])
if intra >= 0:
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
import keras
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from omegaconf import OmegaConf
from sweeps.config import DataConfig, DatasetName
from sweeps.training.data import load_dataset
data = load_dataset(OmegaConf.structured(DataConfig(name=DatasetName.fashion_mnist)))
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=int(sys.argv[3]))
times = []
class T(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): times.append(time.perf_counter() - self.t)
model.fit(data.x_train, data.y_train, batch_size=32, epochs=3, callbacks=[T()], verbose=0)
print(json.dumps(sorted(times[1:])))
'''
settings = [("default", -1, -1, {}), ("intra2 inter2", 2, 2, {}), ("intra1 inter1", 1, 1, {}), ("intra2 inter1", 2, 1, {}),
            ("oneDNN off", -1, -1, {"TF_ENABLE_ONEDNN_OPTS": "0"})]
for spe in (1, 64):
    for rep in range(2):
        for name, intra, inter, env in settings:
            p = subprocess.run([sys.executable, "-c", SCRIPT, str(intra), str(inter), str(spe)], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow", **env})
            out = p.stdout.strip().splitlines()[-1] if p.returncode == 0 else p.stderr[-500:]
            print(f"steps_per_execution={spe} rep {rep} {name}: {out}", flush=True)
