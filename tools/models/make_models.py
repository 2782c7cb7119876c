"""Trains the bundled demo models and converts them to full-int8 TensorFlow Lite files.

Run with a venv that has `tensorflow-cpu scikit-learn tflite-micro ai-edge-litert`:

    python tools/models/make_models.py --out models/

For each model it writes models/NAME/{model.tflite, samples.bin, labels.bin} and then calls
tools/models/make_vectors.py (which needs no TensorFlow) to write manifest.json and vectors.json.
It also writes tiny int8 models for the engine's tests into tests/vectors/models/:
unsupported_op.tflite, whose GELU op the MCU engine does not implement,
reshape_softmax.tflite, which keeps a RESHAPE in front of a SOFTMAX, and
dense_per_tensor.tflite, whose FULLY_CONNECTED weights have one scale per tensor.

Training is seeded and single-threaded so that a re-run reproduces the same weights on the same
TensorFlow build; the converter's output can still differ across TensorFlow versions, which is
why the committed manifests record each file's sha256.
"""
import argparse
import os
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import make_vectors  # noqa: E402

SEED = 20261123
LABELS = [str(d) for d in range(10)]
# The held-out split doubles as each node's input stream (samples.bin); 20% of the 1797 digits is
# 360 samples = 23 KB of int8 per model, under the 30 KB a board's flash budget allows for it.
TEST_FRACTION = 0.2


def seed_everything(tf):
    random.seed(SEED)
    np.random.seed(SEED)
    tf.keras.utils.set_random_seed(SEED)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:
        pass
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


def load_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel intensities are 0..16; /16 maps them onto [0, 1].
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=TEST_FRACTION, random_state=SEED, stratify=y)


def build_dense(tf):
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Input(shape=(64,), batch_size=1, name="pixels"),
        layers.Dense(32, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="digits_dense")


def build_conv(tf):
    layers = tf.keras.layers
    # Each layer exercises a different kernel path of the MCU engine: SAME and VALID padding,
    # stride 2 with asymmetric SAME padding, a depth multiplier, both pools, RELU and RELU6.
    return tf.keras.Sequential([
        layers.Input(shape=(8, 8, 1), batch_size=1, name="image"),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.DepthwiseConv2D(3, depth_multiplier=2, padding="valid", activation="relu6"),
        layers.MaxPooling2D(2),
        layers.Conv2D(24, 3, strides=2, padding="same", activation="relu"),
        layers.AveragePooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ], name="digits_conv")


def build_unsupported(tf):
    layers = tf.keras.layers
    return tf.keras.Sequential([
        layers.Input(shape=(8,), batch_size=1, name="x"),
        layers.Dense(4, activation="gelu"),
    ], name="unsupported_op")


def build_reshape_softmax(tf):
    layers = tf.keras.layers
    # Untrained: it only has to keep a RESHAPE the converter cannot fold away (the digits
    # models' flattens are absorbed into FULLY_CONNECTED), feeding int8 SOFTMAX.
    return tf.keras.Sequential([
        layers.Input(shape=(2, 5), batch_size=1, name="x"),
        layers.Reshape((10,)),
        layers.Softmax(),
    ], name="reshape_softmax")


def build_per_tensor_dense(tf):
    layers = tf.keras.layers
    # Untrained, converted with per-tensor weight scales: current converters quantize dense
    # layers per channel, and TFLM derives per-tensor FULLY_CONNECTED multipliers differently
    # (the input x weight scale product is rounded to float32 first).
    return tf.keras.Sequential([
        layers.Input(shape=(16,), batch_size=1, name="x"),
        layers.Dense(12, activation="relu6"),
        layers.Dense(5, activation="softmax"),
    ], name="dense_per_tensor")


def train(tf, model, x_train, y_train, epochs):
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # batch_size here is the training batch; the Input's batch_size=1 only fixes the exported shape.
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    return model


def to_int8_tflite(tf, model, representative, per_tensor_dense=False):
    def dataset():
        for row in representative:
            yield [row[None, ...].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if per_tensor_dense:
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return converter.convert()


def quantize_inputs(model_bytes, x):
    scale, zero_point = make_vectors.input_quantization(model_bytes)
    q = np.round(x / scale) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def write_model(out_dir, name, tflite_bytes, x_test, y_test, description):
    model_dir = os.path.join(out_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "model.tflite"), "wb") as f:
        f.write(tflite_bytes)
    samples = quantize_inputs(tflite_bytes, x_test.reshape(len(x_test), -1))
    with open(os.path.join(model_dir, "samples.bin"), "wb") as f:
        f.write(samples.tobytes())
    with open(os.path.join(model_dir, "labels.bin"), "wb") as f:
        f.write(y_test.astype(np.uint8).tobytes())
    manifest = make_vectors.build(model_dir, name=name, labels=LABELS, description=description)
    print("%s: %d bytes, arena %d, accuracy litert %.4f tflm %.4f" % (
        name, manifest["flash_bytes"], manifest["arena_bytes"],
        manifest["accuracy"]["litert"], manifest["accuracy"]["tflite_micro"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "models"))
    parser.add_argument("--test-models", default=os.path.join(REPO, "tests", "vectors", "models"),
                        help="where to write models used only by error tests")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)

    import tensorflow as tf

    seed_everything(tf)
    x_train, x_test, y_train, y_test = load_split()

    dense = train(tf, build_dense(tf), x_train.reshape(-1, 64), y_train, args.epochs)
    write_model(args.out, "digits_dense",
                to_int8_tflite(tf, dense, x_train.reshape(-1, 64)[:300]), x_test, y_test,
                "sklearn digits, 64 pixels scaled to [0,1], dense 64-32-10")

    seed_everything(tf)
    conv = train(tf, build_conv(tf), x_train[..., None], y_train, args.epochs)
    write_model(args.out, "digits_conv",
                to_int8_tflite(tf, conv, x_train[..., None][:300]), x_test, y_test,
                "sklearn digits, 8x8x1 image scaled to [0,1], conv/depthwise/pool net")

    seed_everything(tf)
    unsupported = build_unsupported(tf)
    rng = np.random.default_rng(SEED)
    os.makedirs(args.test_models, exist_ok=True)
    with open(os.path.join(args.test_models, "unsupported_op.tflite"), "wb") as f:
        f.write(to_int8_tflite(tf, unsupported, rng.uniform(-1, 1, (50, 8)).astype(np.float32)))
    with open(os.path.join(args.test_models, "reshape_softmax.tflite"), "wb") as f:
        f.write(to_int8_tflite(tf, build_reshape_softmax(tf), rng.uniform(-4, 4, (50, 2, 5)).astype(np.float32)))
    with open(os.path.join(args.test_models, "dense_per_tensor.tflite"), "wb") as f:
        f.write(to_int8_tflite(tf, build_per_tensor_dense(tf), rng.uniform(-2, 2, (50, 16)).astype(np.float32),
                               per_tensor_dense=True))


if __name__ == "__main__":
    main()
