# A `camera` input source (Linux boards only: it needs numpy): frames from the board's camera
# (its HAL opens it, boards/hal*.py `camera`), taken at a rate, each resized to the model's input
# by averaging areas, made grey if the model takes one channel, scaled to the model's value range
# and quantised to int8.
#
#   input = { kind = "camera", rate_hz = 5, scale = 0.00392, offset = 0.0, grayscale = false }
#
# A pixel p (0..255) is the value p * scale + offset (default scale 1/255, offset 0: the [0, 1]
# an image model is usually trained on), which the model's input quantisation (scale s, zero
# point z) makes round(value / s) + z, clamped to int8. Positions count frames from the
# assignment's `input.start`; the frame's true label is the camera's when it knows one (a
# simulated camera serving labelled files), so accuracy shows in the results.
import asyncio
import time

from .sources import SourceError

MAX_RATE_HZ = 120
DEFAULT_RATE_HZ = 5
# ITU-R BT.601 luma weights: what "grey" means for an RGB frame.
LUMA = (0.299, 0.587, 0.114)


def _number(value):
    return type(value) in (int, float)


def model_image_shape(shape):
    """(height, width, channels) of a model's input shape, batch first: [1, H, W, C] or [1, H, W]
    (grey); SourceError when it is no image."""
    dims = [int(d) for d in shape]
    if len(dims) == 3:
        dims = dims + [1]
    if len(dims) != 4 or dims[0] != 1 or dims[3] not in (1, 3) or min(dims) < 1:
        raise SourceError("a camera input needs a model taking an image (H, W, 1 or 3 channels); "
                          "this one takes %s" % (list(shape),))
    return tuple(dims[1:])


def area_weights(source, target):
    """A (target, source) matrix whose row i averages the source pixels target pixel i covers,
    each weighted by how much of it lies inside: the area (box) resize along one axis, which
    neither drops pixels on a shrink (as nearest would) nor blurs an integer enlargement."""
    import numpy
    weights = numpy.zeros((target, source), dtype=numpy.float64)
    step = source / target
    for i in range(target):
        lo, hi = i * step, (i + 1) * step
        first, last = int(lo), min(source, int(numpy.ceil(hi)))
        for j in range(first, last):
            weights[i, j] = min(hi, j + 1) - max(lo, j)
        weights[i] /= weights[i].sum()
    return weights


class Preprocess:
    """Frame (H, W) or (H, W, C) of 0..255 -> the model's int8 input bytes."""

    def __init__(self, shape, input_quant, scale=1 / 255.0, offset=0.0, grayscale=False):
        self.height, self.width, self.channels = model_image_shape(shape)
        self.scale, self.offset, self.grayscale = scale, offset, grayscale
        self.in_scale, self.zero_point = float(input_quant[0]), int(input_quant[1])
        if not self.in_scale > 0:
            raise SourceError("the model's input is not quantised (scale %r): a camera input needs int8" % (input_quant[0],))
        self._weights = {}   # frame (height, width) -> its resize matrices, made once

    def _resize(self, plane):
        key = plane.shape[:2]
        if key not in self._weights:
            self._weights[key] = (area_weights(key[0], self.height), area_weights(key[1], self.width).T)
        rows, cols = self._weights[key]
        if plane.ndim == 2:
            return rows @ plane @ cols
        return (rows @ plane.transpose(2, 0, 1) @ cols).transpose(1, 2, 0)

    def __call__(self, frame):
        import numpy
        image = numpy.asarray(frame)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)) or 0 in image.shape:
            raise SourceError("a camera frame must be H x W (grey) or H x W x 3 (RGB), got %s" % (image.shape,))
        image = image.astype(numpy.float64)
        if image.ndim == 3:
            image = image[:, :, :3]
            if self.channels == 1 or self.grayscale:
                image = image @ numpy.array(LUMA)
        # Resize before anything per pixel: the model's input is far smaller than a frame.
        image = self._resize(image)
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] != self.channels:   # grey frame, colour model: the same grey thrice
            image = numpy.repeat(image[:, :, :1], self.channels, axis=2)
        values = image * self.scale + self.offset
        q = numpy.rint(values / self.in_scale) + self.zero_point
        return numpy.clip(q, -128, 127).astype(numpy.int8).tobytes()


class CameraSource:
    live = True

    def __init__(self, spec, model, hal):
        rate = spec.get("rate_hz", DEFAULT_RATE_HZ)
        if not _number(rate) or not 0 < rate <= MAX_RATE_HZ:
            raise SourceError("input.rate_hz must be a number above 0, at most %d" % MAX_RATE_HZ)
        scale, offset = spec.get("scale", 1 / 255.0), spec.get("offset", 0.0)
        if not _number(scale) or not _number(offset):
            raise SourceError("input.scale and input.offset must be numbers")
        grayscale = spec.get("grayscale", False)
        if type(grayscale) is not bool:
            raise SourceError("input.grayscale must be true or false")
        self.prepare = Preprocess(model.input_shape, model.input_quant, scale, offset, grayscale)
        if self.prepare.height * self.prepare.width * self.prepare.channels != model.input_size:
            raise SourceError("the model's input shape %s does not make its %d-byte input"
                              % (list(model.input_shape), model.input_size))
        try:
            self.camera = hal.camera()
        except OSError as e:
            raise SourceError("camera: %s" % e)
        self.period_s = 1.0 / rate
        self.pos = spec.get("start", 0)
        self.next_s = time.monotonic()

    def frame_into(self, buf):
        """Capture one frame and put it, made the model's input, into buf: its true label."""
        try:
            frame, truth = self.camera.read()
        except OSError as e:
            raise SourceError("camera: %s" % e)
        buf[:] = self.prepare(frame)
        return truth

    async def next_into(self, buf, wait_ms=0):
        early = self.next_s - time.monotonic()
        if early > wait_ms / 1000.0:
            await asyncio.sleep(wait_ms / 1000.0)
            return None
        if early > 0:
            await asyncio.sleep(early)
        # A frame not taken when due is gone (a camera shows the present): a worker that fell
        # behind takes the next one now rather than a burst to catch up.
        self.next_s = max(self.next_s + self.period_s, time.monotonic())
        # Capturing waits on the sensor (tens of ms): in a thread, so the node's loop keeps
        # beating and talking meanwhile.
        truth = await asyncio.get_running_loop().run_in_executor(None, self.frame_into, buf)
        pos = self.pos
        self.pos = pos + 1
        return pos, truth

    def waiting(self):
        return 0

    def close(self):
        self.camera.close()
