# Linux nodes only: the process an isolated inference worker runs in.
#
# The node agent starts `python -m edgefleet.firmware.inference_child MODEL BACKEND THREADS`
# and talks to it over stdin/stdout in frames (see firmware/procworker.py). A segfault in a
# native interpreter kills this process, never the agent.
import json
import os
import struct
import sys
import time

from .backends import open_model

# Frame: kind (1 byte), count (u32), payload length (u32), then the payload.
HEADER = struct.Struct("<BII")
READY = 1
INFER = 2
OUTPUTS = 3
ERROR = 4
# Fault injection (firmware/faults.py): spin forever, as a native interpreter stuck in a loop.
HANG = 5


def read_exact(stream, size):
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def write_frame(stream, kind, count, payload):
    stream.write(HEADER.pack(kind, count, len(payload)))
    stream.write(payload)
    stream.flush()


def serve(model_path, backend, num_threads, stdin, stdout):
    try:
        name, model = open_model(model_path, backend or None, num_threads=num_threads)
    except Exception as e:  # any load failure is reported to the agent, which names it in an event
        write_frame(stdout, ERROR, 0, ("%s: %s" % (type(e).__name__, e)).encode())
        return 1
    meta = {"backend": name, "input_size": model.input_size, "output_size": model.output_size,
            "input_quant": list(model.input_quant), "input_shape": list(model.input_shape), "output_quant": list(model.output_quant), "pid": os.getpid()}
    write_frame(stdout, READY, 0, json.dumps(meta).encode())
    in_size = model.input_size
    while True:
        header = read_exact(stdin, HEADER.size)
        if header is None:
            return 0  # the agent closed the pipe: stop quietly
        kind, count, length = HEADER.unpack(header)
        payload = read_exact(stdin, length)
        if kind == HANG:
            while True:
                pass
        if kind != INFER or payload is None or length != count * in_size:
            write_frame(stdout, ERROR, 0, b"bad request frame")
            return 1
        outputs, latencies = model.invoke_batch(payload, count, time.perf_counter_ns)
        write_frame(stdout, OUTPUTS, count, outputs + struct.pack("<%dI" % count, *latencies))


def main(argv):
    model_path, backend, num_threads = argv[1], argv[2], int(argv[3])
    return serve(model_path, backend, num_threads, sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
