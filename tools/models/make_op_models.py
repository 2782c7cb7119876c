#!/usr/bin/env python3
"""Writes one tiny int8 model per operator (or small group of operators) the MCU engine runs,
made by the standard TensorFlow converter, into tests/data/ops/. tests/test_engine_ops.py runs
each against TFLite Micro; TensorFlow is needed only here, never by the tests.

Run it with a venv that has tensorflow-cpu (TensorFlow is not an edgefleet dependency):

    python3 -m venv /work/tfvenv && /work/tfvenv/bin/pip install tensorflow-cpu
    /work/tfvenv/bin/python tools/models/make_op_models.py [--only NAME ...]

Every model is fully int8-quantized from a representative dataset (inputs and outputs int8)
except `float_io`, which keeps float32 input and output, so the converter puts a QUANTIZE in
front and a DEQUANTIZE behind. `keras_default` is a Keras model exported with default settings
(a dynamic batch dimension), whose Flatten becomes SHAPE, STRIDED_SLICE and PACK feeding a
RESHAPE. `squeeze` is the one model the converter cannot make as such: it always turns a SQUEEZE
into the equivalent RESHAPE (static shapes or dynamic), so its RESHAPE is rewritten as that
SQUEEZE (same tensors, `squeeze_dims` [1, 2]) through TensorFlow's own schema object API, the way
TensorFlow's flatbuffer_utils edit models. Weights are seeded random: what matters is the operators and their quantization, not
what the model computes. The converter's output can differ across TensorFlow versions; the tests
only need the files to be valid models that TFLite Micro runs.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEST = os.path.join(REPO, "tests", "data", "ops")
SEED = 20261124
SHAPE = (1, 4, 4, 3)
# Models whose batch dimension stays dynamic, as a Keras export leaves it.
DYNAMIC = ("squeeze_expand",)


def _consts(tf):
    rng = np.random.default_rng(SEED)

    def c(*shape, scale=0.5):
        return tf.constant(rng.normal(0, scale, size=shape).astype(np.float32))
    return c


def _binary(tf, c, op):
    """`op` applied as the converter sees it in small CNNs: an activation with a per-channel
    constant (broadcast over H and W), two activations of one shape, and an activation with a
    [1, 1, 1, C] one (broadcast), the first with a fused RELU."""
    k1, k4 = c(1, 1, 3, 3), c(4, 4, 3, 3)
    bias = c(3)

    def f(x):
        pooled = tf.nn.conv2d(x, k4, 1, "VALID")            # [1, 1, 1, 3]
        y = tf.nn.relu(op(x, pooled))                       # broadcast, fused RELU
        y = op(y, bias)                                     # constant operand, broadcast
        return op(y, tf.nn.conv2d(y, k1, 1, "SAME"))          # same shape
    return f


def models(tf):
    c = _consts(tf)
    conv = c(1, 1, 3, 4)

    def add(x):
        return _binary(tf, c, tf.add)(x)

    def sub(x):
        return _binary(tf, c, tf.subtract)(x)

    def mul(x):
        return _binary(tf, c, tf.multiply)(x)

    def concatenation(x):
        a = tf.nn.conv2d(x, c(1, 1, 3, 2), 1, "SAME")
        b = tf.nn.conv2d(x, c(1, 1, 3, 4), 1, "SAME")
        y = tf.concat([x, a, b], axis=-1)                   # [1, 4, 4, 9]
        return tf.concat([y, tf.nn.conv2d(y, c(1, 1, 9, 9), 1, "SAME")], axis=1)

    def pad(x):
        y = tf.pad(x, [[0, 0], [1, 2], [2, 0], [0, 0]])
        return tf.nn.conv2d(y, conv, 1, "VALID")

    def mean(x):
        y = tf.nn.conv2d(x, conv, 1, "SAME")
        kept = tf.reduce_mean(y, axis=[1, 2], keepdims=True)   # [1, 1, 1, 4]
        flat = tf.reduce_mean(y, axis=[1, 2])                  # [1, 4]
        rows = tf.reduce_mean(y, axis=[2])                     # [1, 4, 4]
        return tf.concat([tf.reshape(kept, [1, 4]), flat, tf.reshape(rows, [1, 16])], axis=1)

    def squeeze_expand(x):
        # Written for a dynamic batch (see DYNAMIC): with static shapes the converter turns both
        # into RESHAPE.
        y = tf.nn.conv2d(x, c(4, 4, 3, 5), 1, "VALID")       # [N, 1, 1, 5]
        s = tf.squeeze(y, axis=[1, 2])                       # [N, 5]
        return tf.expand_dims(s, 1)                          # [N, 1, 5]

    # The activations take the model's input directly, so that random int8 inputs reach all 256
    # entries of their tables; a second copy sees the input scaled up 4x (another input scale,
    # and the saturated ends).
    def unary(fn):
        return lambda x: tf.concat([fn(x), fn(x * 4.0)], axis=-1)

    def leaky_relu(x):
        return unary(lambda v: tf.nn.leaky_relu(v, alpha=0.2))(x)

    def logistic(x):
        return unary(tf.sigmoid)(x)

    def tanh(x):
        return unary(tf.tanh)(x)

    def hard_swish(x):
        return unary(lambda v: v * tf.nn.relu6(v + 3.0) / 6.0)(x)

    def float_io(x):
        return tf.nn.relu(tf.nn.conv2d(x, conv, 1, "SAME"))

    return {"add": add, "sub": sub, "mul": mul, "concatenation": concatenation, "pad": pad, "mean": mean,
            "squeeze_expand": squeeze_expand, "leaky_relu": leaky_relu, "logistic": logistic, "tanh": tanh,
            "hard_swish": hard_swish, "float_io": float_io}


def keras_default(tf):
    """A Keras model as a user writes it: batch dimension left dynamic, exported with defaults."""
    tf.keras.utils.set_random_seed(SEED)
    layers = tf.keras.layers
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    return model


def representative(shape, seed):
    rng = np.random.default_rng(seed)

    def gen():
        for _ in range(64):
            yield [rng.normal(0, 1, size=shape).astype(np.float32)]
    return gen


def squeeze_model(tf):
    """The converter's model of conv -> squeeze (a RESHAPE to [1, 5] in its output), with that
    RESHAPE made the SQUEEZE it stands for."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema
    kernel = _consts(tf)(4, 4, 3, 5)
    concrete = tf.function(lambda x: tf.squeeze(tf.nn.conv2d(x, kernel, 1, "VALID"), axis=[1, 2]),
                           input_signature=[tf.TensorSpec(SHAPE, tf.float32)]).get_concrete_function()
    data = convert(tf, tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable_obj=None), SHAPE)
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    reshape = [i for i, code in enumerate(model.operatorCodes)
               if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.RESHAPE]
    subgraph = model.subgraphs[0]
    ops = [op for op in subgraph.operators if op.opcodeIndex in reshape]
    if len(reshape) != 1 or not ops:
        raise SystemExit("squeeze: the converter's model has no RESHAPE to rewrite")
    code = model.operatorCodes[reshape[0]]
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.SQUEEZE
    for op in ops:
        in_shape = list(subgraph.tensors[op.inputs[0]].shape)
        out_shape = list(subgraph.tensors[op.outputs[0]].shape)
        dims = [i for i, d in enumerate(in_shape) if d == 1 and i > 0]
        if [d for i, d in enumerate(in_shape) if i not in dims] != out_shape:
            raise SystemExit("squeeze: RESHAPE %s -> %s is not a squeeze" % (in_shape, out_shape))
        options = schema.SqueezeOptionsT()
        options.squeezeDims = dims
        op.builtinOptionsType = schema.BuiltinOptions.SqueezeOptions
        op.builtinOptions = options
        op.inputs = op.inputs[:1]   # RESHAPE's second input, the new shape, is not SQUEEZE's
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def convert(tf, converter, shape, float_io=False):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(shape, SEED)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="model names to write (default: all)")
    args = parser.parse_args()
    import tensorflow as tf
    tf.random.set_seed(SEED)
    os.makedirs(DEST, exist_ok=True)
    made = {}
    for name, fn in models(tf).items():
        if args.only and name not in args.only:
            continue
        shape = (None,) + SHAPE[1:] if name in DYNAMIC else SHAPE
        concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable_obj=None)
        made[name] = convert(tf, converter, SHAPE, float_io=name == "float_io")
    if not args.only or "squeeze" in args.only:
        made["squeeze"] = squeeze_model(tf)
    if not args.only or "keras_default" in args.only:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_default(tf))
        made["keras_default"] = convert(tf, converter, (1, 8, 8, 1))
    for name, data in made.items():
        path = os.path.join(DEST, name + ".tflite")
        with open(path, "wb") as f:
            f.write(data)
        print("wrote %s (%d bytes)" % (os.path.relpath(path, REPO), len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
