#!/usr/bin/env python
"""The Keras peer of ``throughput.py``: M1, M2, M3 and the default conv autoencoder trained with
``model.fit`` on random data; prints one JSON line (images/s: the median of the epochs after the
first).

Adapted from the issue's ``../shared/peers/bench_tf.py``. It runs in a TensorFlow environment, not
aevision's (``python3 -m venv tfvenv && tfvenv/bin/pip install tensorflow-cpu``), so it imports
neither aevision nor ``common``. Settings, each the peer's own:

- as written: numpy arrays straight into ``fit`` (tf.data autotune on), ``jit_compile="auto"``;
- ``--jit --no-autotune``: XLA, and Keras' own numpy -> tf.data pipeline with autotune off (the best
  fp32 Keras of the performance issue);
- ``--precision mixed_bfloat16``: Keras' mixed precision policy (bf16 compute, fp32 variables; the
  output layer in float32, as Keras' guide recommends).

    tfvenv/bin/python bench/peer_keras.py --model M3 --jit --no-autotune --precision mixed_bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def dense_models(name: str, keras):
    layers = keras.layers
    inp = keras.Input((784,))
    if name == "M1":
        h = layers.Dense(256, activation="relu")(inp)
        return keras.Model(inp, layers.Dense(784, activation="sigmoid", dtype="float32")(h))

    class L1Activity(layers.Layer):
        """adds 0.01 * mean(|code|) to the loss"""

        def call(self, x):
            self.add_loss(0.01 * keras.ops.mean(keras.ops.abs(keras.ops.cast(x, "float32"))))
            return x

    h = layers.Dense(784, activation="relu")(inp)
    z = L1Activity()(layers.Dense(128, activation="relu")(h))
    h = layers.Dense(128, activation="relu")(z)
    return keras.Model(inp, layers.Dense(784, activation="sigmoid", dtype="float32")(h))


def conv_models(name: str, keras):
    layers = keras.layers
    inp = keras.Input((32, 32, 3))
    if name == "M3":  # the documents' CIFAR model, decoder fixed to output 32x32 (as in the issue)
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(inp)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu", padding="same")(x)
        x = layers.Dense(8 * 8 * 64, activation="relu")(layers.Flatten()(x))
        x = layers.Reshape((8, 8, 64))(x)
        x = layers.Conv2DTranspose(64, 3, padding="same", activation="relu")(x)
        x = layers.UpSampling2D(2)(x)
        x = layers.Conv2DTranspose(64, 3, padding="same", activation="relu")(x)
        x = layers.UpSampling2D(2)(x)
        return keras.Model(inp, layers.Conv2DTranspose(3, 3, padding="same", dtype="float32")(x))
    # conv: aevision's default conv autoencoder, layer for layer
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
    x = layers.Reshape((8, 8, 64))(layers.Dense(8 * 8 * 64, activation="relu")(x))
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inp, layers.Conv2DTranspose(3, 3, strides=2, padding="same",
                                                   activation="sigmoid", dtype="float32")(x))


def fit_epochs(net, x, a, tf, keras) -> list[float]:
    """Seconds of each epoch of ``fit`` on ``x`` -> ``x``."""
    times: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    if not a.no_autotune:  # as a user writes it: numpy arrays straight into fit()
        net.fit(x, x, batch_size=a.batch, epochs=a.epochs, shuffle=True, verbose=0, callbacks=[Timer()])
        return times
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    ds = ArrayDataAdapter(x, x, batch_size=a.batch, shuffle=True).get_tf_dataset()
    opts = tf.data.Options()
    opts.autotune.enabled = False
    net.fit(ds.with_options(opts), epochs=a.epochs, verbose=0, callbacks=[Timer()])
    return times


def run(a: argparse.Namespace) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    import keras

    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(a.precision)
    shape = (784,) if a.model in ("M1", "M2") else (32, 32, 3)
    x = np.random.default_rng(0).random((a.n, *shape), dtype=np.float32)
    net = (dense_models if a.model in ("M1", "M2") else conv_models)(a.model, keras)
    net.compile(optimizer=keras.optimizers.Adam(), loss="mse", jit_compile=True if a.jit else "auto")
    times = fit_epochs(net, x, a, tf, keras)
    return {"peer": "keras" + ("-xla" if a.jit else "") + ("-noautotune" if a.no_autotune else ""),
            "model": a.model, "precision": a.precision, "n": a.n, "batch": a.batch,
            "epoch_times_s": [round(t, 4) for t in times],
            "images_per_s": round(a.n / statistics.median(times[1:]), 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "tensorflow": tf.__version__, "keras": keras.__version__, "threads": a.threads,
            "jit_compile_resolved": bool(net.jit_compile), "tfdata_autotune": not a.no_autotune,
            "params": int(net.count_params())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=["M1", "M2", "M3", "conv"])
    ap.add_argument("--n", type=int, required=True, help="images per epoch")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--epochs", type=int, required=True, help="the first is warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jit", action="store_true", help="jit_compile=True (XLA)")
    ap.add_argument("--no-autotune", action="store_true", help="Keras' tf.data pipeline, autotune off")
    ap.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    a = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(a.threads))
    print(json.dumps(run(a)))


if __name__ == "__main__":
    main()
