# Input streams for inference workloads. Every kind has the same interface:
#
#   await next_into(buf, wait_ms)   fill buf with the next input: (stream position, true label or
#                                   None); None when no input came within wait_ms (a live source:
#                                   the worker beats and asks again)
#   waiting()                       inputs ready now, without waiting (a worker that fell behind
#                                   takes that many in one batch)
#   live                            True: inputs come when they come (a sensor, a topic), and
#                                   pace the worker; False: read at the workload's rate
#   pos                             the position of the next input
#   close()
#
# "samples": the held-out inputs bundled with a model on flash (samples.bin: raw int8 inputs
# back to back; labels.bin: one true label byte per input). Read one record at a time with
# seek + readinto into a preallocated buffer, so the stream costs no RAM beyond one input.
#
# A stream position counts on past the end of the samples (sample = position % count), so a
# position names one input of the workload's stream for its whole life: the controller hands a
# stream over between nodes at a position (docs/placement.md, exactly once across moves).
from .errors import FirmwareError

# How long a worker waits on a live source before it beats and asks again.
LIVE_WAIT_MS = 500


class SourceError(FirmwareError):
    pass


class SampleSource:
    live = False

    def __init__(self, model_dir, input_size, start=0):
        self.input_size = input_size
        try:
            self._samples = open(model_dir + "/samples.bin", "rb")
        except OSError:
            raise SourceError("no samples.bin in %s" % model_dir)
        try:
            self._labels = open(model_dir + "/labels.bin", "rb")
        except OSError:
            self._labels = None
        self._samples.seek(0, 2)
        self.count = self._samples.tell() // input_size
        if self.count == 0:
            self.close()
            raise SourceError("samples.bin in %s holds no %d-byte input" % (model_dir, input_size))
        self.pos = start
        self._label = bytearray(1)

    async def next_into(self, buf, wait_ms=0):
        return self.read_into(buf)

    def waiting(self):
        return 1 << 30   # every input is there: a file

    def read_into(self, buf):
        """Fill buf with the next input; returns (stream position, true label or None)."""
        pos = self.pos
        index = pos % self.count
        self._samples.seek(index * self.input_size)
        got = self._samples.readinto(buf)
        if got != self.input_size:
            raise SourceError("short read of sample %d" % index)
        truth = None
        if self._labels is not None:
            self._labels.seek(index)
            if self._labels.readinto(self._label) == 1:
                truth = self._label[0]
        self.pos = pos + 1
        return pos, truth

    def close(self):
        self._samples.close()
        if self._labels is not None:
            self._labels.close()


def open_source(spec, model_dir, model, node=None, workload=None):
    """The input stream `spec` (the assignment's `input`) names, for `model` (input_size,
    input_quant); `node` gives a live source what it needs of the board (its HAL, its link),
    `workload` the id of the workload it feeds. Each live kind is a module of its own,
    imported only by a workload that uses it."""
    kind = spec.get("kind")
    if kind == "samples":
        return SampleSource(model_dir, model.input_size, spec.get("start", 0))
    if kind == "sensor":
        from .source_sensor import SensorSource
        return SensorSource(spec, model, node.hal)
    if kind == "topic":
        from .source_topic import TopicSource
        return TopicSource(spec, model, node, workload)
    if kind == "camera":
        from .source_camera import CameraSource
        return CameraSource(spec, model, node.hal)
    raise SourceError("unknown input source kind %r" % kind)
