#!/usr/bin/env python3
"""Writes the small models tests/test_model_cli.py adds, by changing operator codes in a bundled
model's FlatBuffer in place (no TensorFlow needed; the file's layout stays valid, only the
operator each code table entry names changes):

  tests/data/conv_unsupported.tflite  digits_conv with MAX_POOL_2D made L2_POOL_2D and SOFTMAX
                                      made RELU: two ops the MCU engine has no kernel for
  tests/data/dense_relu.tflite        digits_dense with SOFTMAX made RELU: LiteRT runs it
                                      (int8 RELU takes any output quantization), the MCU
                                      engine does not: a Pi-only model. (LOGISTIC, used here
                                      before, is an engine op now.)
  tests/data/conv_tanh.tflite         digits_conv with its three convolutions' fused activations
                                      made TANH: supported ops used in a way the engine refuses

    .venv/bin/python tools/models/make_test_models.py
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from firmware.engine import loader  # noqa: E402
from firmware.engine import opnames  # noqa: E402

L2_POOL_2D = 12
RELU = 19   # a standalone RELU: LiteRT runs it (at the version the code entry keeps), the engine not
TANH = 4   # ActivationFunctionType: a fused activation TFLite has and the MCU engine does not
# The options field holding fused_activation_function, by op code (schema.fbs).
ACTIVATION_FIELD = {opnames.CONV_2D: 3, opnames.DEPTHWISE_CONV_2D: 4}


def recode(data, changes):
    """A copy of the .tflite bytes with each OperatorCode whose code is a key of `changes` set to
    its value, in both the deprecated int8 field (0) and the int32 builtin_code field (3)."""
    out = bytearray(data)
    root = loader._ref(data, 0)
    for table in loader._tables(data, root, 1):
        code = max(loader.scalar(data, table, 0, "<b"), loader.scalar(data, table, 3, "<i"))
        if code not in changes:
            continue
        for field, fmt in ((0, "<b"), (3, "<i")):
            pos = loader._field(data, table, field)
            if pos:
                struct.pack_into(fmt, out, pos, changes[code])
    return bytes(out)


def refuse_activations(data, activation):
    """A copy with every CONV_2D and DEPTHWISE_CONV_2D op's stored fused activation set to
    `activation` (an op whose activation is the default NONE has no field to change)."""
    out = bytearray(data)
    g = loader.parse(data)
    for code, _, _, opts in g.ops:
        if code in ACTIVATION_FIELD and opts:
            pos = loader._field(data, opts, ACTIVATION_FIELD[code])
            if pos:
                struct.pack_into("<b", out, pos, activation)
    return bytes(out)


def main():
    outputs = {
        "conv_unsupported.tflite": ("digits_conv", {opnames.MAX_POOL_2D: L2_POOL_2D, opnames.SOFTMAX: RELU}),
        "dense_relu.tflite": ("digits_dense", {opnames.SOFTMAX: RELU}),
        "conv_tanh.tflite": ("digits_conv", TANH),
    }
    dest = os.path.join(REPO, "tests", "data")
    os.makedirs(dest, exist_ok=True)
    for filename, (model, changes) in outputs.items():
        with open(os.path.join(REPO, "models", model, "model.tflite"), "rb") as f:
            data = f.read()
        data = refuse_activations(data, changes) if isinstance(changes, int) else recode(data, changes)
        with open(os.path.join(dest, filename), "wb") as f:
            f.write(data)
        print("wrote tests/data/%s (%d bytes)" % (filename, len(data)))


if __name__ == "__main__":
    main()
