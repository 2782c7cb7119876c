#!/usr/bin/env python3
"""Writes the sensor-anomaly model the `sensor` input tests and the README's walk-through use:
a window of 32 ADC readings (scaled to -1..1) in, the probability that the window carries a
burst (a square wave at a quarter of the sampling rate, over a slow sine and noise) out.

    tests/data/signal_anomaly/model.tflite   full-int8, made by the standard TensorFlow converter
    tests/data/signal_anomaly/samples.bin    200 held-out windows, int8 as the model takes them
    tests/data/signal_anomaly/labels.bin     1 for a window with a burst, else 0

The signal matches boards/hal_sim.py's simulated sensor: mid 32768, a 2 Hz sine of amplitude
8000 sampled at 200 Hz, noise of +-200, and a burst of +-3000 to +-9000 when injected.
TensorFlow is not a dependency of the project: run this with a venv that has tensorflow-cpu.

    /path/to/tf-venv/bin/python tools/models/make_sensor_model.py
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "data", "signal_anomaly")
WINDOW = 32
RATE_HZ = 200.0
SEED = 7


def windows(rng, count, burst):
    """`count` windows of raw readings (0..65535), with or without a burst."""
    t0 = rng.uniform(0, 10, (count, 1))
    t = t0 + np.arange(WINDOW)[None, :] / RATE_HZ
    raw = 32768 + 8000 * np.sin(2 * np.pi * 2.0 * t) + rng.uniform(-200, 200, (count, WINDOW))
    if burst:
        phase = rng.integers(0, 4, (count, 1))
        square = np.where(((np.arange(WINDOW)[None, :] + phase) >> 1) & 1, 1.0, -1.0)
        raw += rng.uniform(3000, 9000, (count, 1)) * square
    return np.clip(raw, 0, 65535)


def scaled(raw):
    return (raw / 32767.5 - 1.0).astype(np.float32)   # the workload's scale and offset


def main():
    import tensorflow as tf
    tf.keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    x = np.concatenate([scaled(windows(rng, 3000, False)), scaled(windows(rng, 3000, True))])
    y = np.concatenate([np.zeros(3000), np.ones(3000)]).astype(np.float32)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    layers = tf.keras.layers
    model = tf.keras.Sequential([layers.Input(shape=(WINDOW,), batch_size=1, name="window"),
                                 layers.Dense(16, activation="relu"), layers.Dense(1, activation="sigmoid")],
                                name="signal_anomaly")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=64, verbose=0)
    print("train accuracy %.4f" % model.evaluate(x, y, verbose=0)[1])

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(300))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    data = converter.convert()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "model.tflite"), "wb") as f:
        f.write(data)

    interp = tf.lite.Interpreter(model_content=data)
    scale, zero_point = interp.get_input_details()[0]["quantization"]
    held_x = np.concatenate([scaled(windows(rng, 100, False)), scaled(windows(rng, 100, True))])
    held_y = np.concatenate([np.zeros(100), np.ones(100)]).astype(np.uint8)
    q = np.clip(np.round(held_x / scale + zero_point), -128, 127).astype(np.int8)
    q.tofile(os.path.join(OUT, "samples.bin"))
    held_y.tofile(os.path.join(OUT, "labels.bin"))
    print("wrote %s (%d bytes), input scale %g zero point %d" % (OUT, len(data), scale, zero_point))


if __name__ == "__main__":
    main()
