# A simulated board's camera: image files served as frames, so a test drives the same path as a
# real camera (firmware/source_camera.py). sim.json's "camera" names a folder; its .pgm (grey)
# and .ppm (RGB) files, binary (P5 / P6, 8-bit), are the frames in name order, round and round.
# A file's true label is the number after the last "_" in its name ("0042_7.pgm": 7), so a
# simulated fleet's results show accuracy. The folder is read again at each frame: a test may
# point the camera elsewhere while it runs.
import os


def read_pnm(path):
    """A binary PGM or PPM (maxval up to 255) as a numpy uint8 array H x W or H x W x 3."""
    import numpy
    with open(path, "rb") as f:
        data = f.read()
    fields, at = [], 0
    while len(fields) < 4:   # magic, width, height, maxval, with # comments between
        while at < len(data) and data[at:at + 1].isspace():
            at += 1
        if data[at:at + 1] == b"#":
            at = data.find(b"\n", at) + 1 or len(data)
            continue
        end = at
        while end < len(data) and not data[end:end + 1].isspace():
            end += 1
        if end == at:
            raise OSError("%s: not a complete PGM/PPM header" % path)
        fields.append(data[at:end])
        at = end
    magic = fields[0]
    if magic not in (b"P5", b"P6"):
        raise OSError("%s: not a binary PGM (P5) or PPM (P6) image" % path)
    try:
        width, height, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    except ValueError:
        raise OSError("%s: bad PGM/PPM header" % path)
    if not 0 < maxval < 256:
        raise OSError("%s: only 8-bit images (maxval %d)" % (path, maxval))
    channels = 3 if magic == b"P6" else 1
    count = width * height * channels
    pixels = data[at + 1:at + 1 + count]   # one whitespace byte ends the header
    if len(pixels) != count:
        raise OSError("%s: %d of %d pixel bytes" % (path, len(pixels), count))
    frame = numpy.frombuffer(pixels, dtype=numpy.uint8).reshape((height, width, channels) if channels == 3 else (height, width))
    if maxval != 255:
        frame = (frame.astype(numpy.uint16) * 255 // maxval).astype(numpy.uint8)
    return frame


def label_of(name):
    """The true label a frame's file name carries ("0042_7.pgm": 7), or None."""
    stem = name.rsplit(".", 1)[0]
    _, sep, tail = stem.rpartition("_")
    return int(tail) if sep and tail.isdigit() else None


class FileCamera:
    def __init__(self, hal):
        self.hal = hal
        self.at = 0
        self.folder()   # nothing to serve: say so now, when the workload starts

    def folder(self):
        self.hal._read_sim_file()
        folder = self.hal.camera_dir
        if not folder:
            raise OSError("the simulated camera has no frames: set sim.json's \"camera\" to a folder of .pgm/.ppm images")
        try:
            names = sorted(n for n in os.listdir(folder) if n.endswith((".pgm", ".ppm")))
        except OSError as e:
            raise OSError("the simulated camera's folder %s: %s" % (folder, e))
        if not names:
            raise OSError("the simulated camera's folder %s holds no .pgm/.ppm image" % folder)
        return folder, names

    def read(self):
        folder, names = self.folder()
        name = names[self.at % len(names)]
        self.at += 1
        return read_pnm(os.path.join(folder, name)), label_of(name)

    def close(self):
        pass
