"""The `camera` input source (firmware/source_camera.py) and the cameras behind it: frames
resized by area to the model's input, made grey or colour as it takes, scaled and quantised to
int8; a simulated board's camera serving PGM/PPM files (boards/sim_camera.py); what placement
and fleet files say of a camera workload."""
import asyncio
import json

import numpy
import pytest

from edgefleet.boards import catalog
from edgefleet.boards.hal_mock import MockHal
from edgefleet.boards.hal_sim import SimHal
from edgefleet.boards.sim_camera import label_of, read_pnm
from edgefleet.controller.errors import ConfigError
from edgefleet.controller.fleet import fleetfile, placement
from edgefleet.firmware.source_camera import CameraSource, Preprocess, area_weights, model_image_shape
from edgefleet.firmware.sources import SourceError, open_source

DIGITS_QUANT = (1 / 255.0, -128)   # digits_conv's input: [0, 1] in int8


class _Model:
    def __init__(self, shape, quant=DIGITS_QUANT):
        self.input_shape = shape
        self.input_size = int(numpy.prod(shape))
        self.input_quant = quant


class _Node:
    def __init__(self, hal):
        self.hal = hal


def _int8(data):
    return numpy.frombuffer(data, dtype=numpy.int8)


def test_area_resize_undoes_an_integer_enlargement_exactly_and_averages_a_shrink():
    small = numpy.arange(64, dtype=numpy.uint8).reshape(8, 8) * 3
    big = numpy.kron(small, numpy.ones((4, 4), dtype=numpy.uint8))   # 32 x 32, each pixel 4 x 4
    prep = Preprocess([1, 8, 8, 1], DIGITS_QUANT)
    assert (_int8(prep(big)).reshape(8, 8) == small.astype(int) - 128).all()
    # A shrink by a fraction: every row of weights sums to 1 and covers its share of the source.
    weights = area_weights(10, 4)
    assert numpy.allclose(weights.sum(axis=1), 1.0)
    assert numpy.allclose(weights[0], [0.4, 0.4, 0.2, 0, 0, 0, 0, 0, 0, 0])
    assert (Preprocess([1, 2, 2, 1], (1.0, 0), scale=1.0)(numpy.full((7, 5), 100, numpy.uint8))
            == bytes([100] * 4))


def test_quantisation_scales_offsets_and_clamps_to_int8():
    frame = numpy.array([[0, 128], [255, 64]], dtype=numpy.uint8)
    # A pixel p is p * scale + offset, then round(value / s) + z, clamped.
    prep = Preprocess([1, 2, 2, 1], (0.5, 10), scale=0.25, offset=-1.0)
    expected = [int(round((p * 0.25 - 1.0) / 0.5)) + 10 for p in (0, 128, 255, 64)]
    assert list(_int8(prep(frame))) == [max(-128, min(127, v)) for v in expected]
    assert list(_int8(prep(frame))) == [8, 72, 127, 40]


def test_colour_frames_go_grey_for_a_grey_model_and_grey_frames_colour_for_a_colour_model():
    rgb = numpy.zeros((4, 4, 3), dtype=numpy.uint8)
    rgb[:, :, 1] = 200                                            # green
    grey = _int8(Preprocess([1, 2, 2, 1], (1.0, -128), scale=1.0)(rgb))
    assert list(grey) == [int(round(0.587 * 200)) - 128] * 4
    colour = _int8(Preprocess([1, 2, 2, 3], (1.0, -128), scale=1.0)(rgb)).reshape(2, 2, 3)
    assert (colour[:, :, 1] == 200 - 128).all() and (colour[:, :, 0] == -128).all()
    forced = _int8(Preprocess([1, 2, 2, 3], (1.0, -128), scale=1.0, grayscale=True)(rgb)).reshape(2, 2, 3)
    assert (forced == int(round(0.587 * 200)) - 128).all()
    widened = _int8(Preprocess([1, 2, 2, 3], (1.0, -128), scale=1.0)(numpy.full((4, 4), 50, numpy.uint8)))
    assert list(widened) == [50 - 128] * 12


def test_a_model_that_takes_no_image_is_refused_by_name():
    assert model_image_shape([1, 8, 8, 1]) == (8, 8, 1)
    assert model_image_shape([1, 28, 28]) == (28, 28, 1)
    with pytest.raises(SourceError, match="takes \\[1, 64\\]"):
        model_image_shape([1, 64])
    with pytest.raises(SourceError, match="taking an image"):
        model_image_shape([1, 8, 8, 5])
    with pytest.raises(SourceError, match="not quantised"):
        Preprocess([1, 8, 8, 1], (0.0, 0))
    with pytest.raises(SourceError, match="must be H x W"):
        Preprocess([1, 8, 8, 1], DIGITS_QUANT)(numpy.zeros((4, 4, 2), numpy.uint8))


def test_camera_source_fills_the_input_counts_frames_and_passes_the_true_label():
    hal = MockHal(catalog.load("rpi4"))
    hal.frames = [(numpy.full((16, 16), 10 * i, numpy.uint8), i) for i in range(3)]
    source = open_source({"kind": "camera", "rate_hz": 100, "start": 5}, "/nowhere", _Model([1, 8, 8, 1]), _Node(hal))
    assert source.live and source.waiting() == 0
    buf = bytearray(64)

    async def take(n):
        return [(await source.next_into(buf, 1000), bytes(buf)) for _ in range(n)]
    got = asyncio.run(take(4))
    assert [g[0] for g in got] == [(5, 0), (6, 1), (7, 2), (8, 0)]
    assert got[1][1] == bytes([(10 - 128) & 0xFF] * 64)
    assert source.pos == 9
    source.close()


def test_camera_source_waits_for_its_rate_and_says_none_within_a_short_wait():
    hal = MockHal(catalog.load("rpi4"))
    hal.frames = [(numpy.zeros((8, 8), numpy.uint8), None)]
    source = CameraSource({"rate_hz": 2}, _Model([1, 8, 8, 1]), hal)
    buf = bytearray(64)

    async def run():
        first = await source.next_into(buf, 10)    # due at once
        second = await source.next_into(buf, 10)   # due in 0.5 s: not within 10 ms
        third = await source.next_into(buf, 1000)
        return first, second, third
    assert asyncio.run(run()) == ((0, None), None, (1, None))


def test_camera_source_errors_name_what_is_wrong():
    hal = MockHal(catalog.load("rpi4"))
    with pytest.raises(SourceError, match="camera: the mock board has no camera"):
        CameraSource({}, _Model([1, 8, 8, 1]), hal)
    hal.frames = [(numpy.zeros((8, 8), numpy.uint8), None)]
    for spec, why in (({"rate_hz": 0}, "rate_hz"), ({"rate_hz": 500}, "at most 120"), ({"scale": "1"}, "scale"),
                      ({"grayscale": 1}, "grayscale")):
        with pytest.raises(SourceError, match=why):
            CameraSource(spec, _Model([1, 8, 8, 1]), hal)
    from edgefleet.boards.hal import Hal
    with pytest.raises(OSError, match="the mock HAL has no camera"):
        Hal.camera(hal)   # the HAL interface's default


def _write_pgm(path, pixels):
    h, w = pixels.shape
    with open(path, "wb") as f:
        f.write(b"P5\n# a comment\n%d %d\n255\n" % (w, h) + pixels.astype(numpy.uint8).tobytes())


def test_simulated_camera_serves_the_folder_sim_json_names_in_order_with_labels(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, label in enumerate((3, 9)):
        _write_pgm(frames / ("%04d_%d.pgm" % (i, label)), numpy.full((4, 6), 40 * (i + 1)))
    rgb = numpy.arange(2 * 3 * 3, dtype=numpy.uint8).reshape(2, 3, 3)
    (frames / "0002.ppm").write_bytes(b"P6 3 2 255\n" + rgb.tobytes())
    (frames / "notes.txt").write_text("not a frame")
    sim_file = tmp_path / "sim.json"
    profile = catalog.load("rpi4")
    hal = SimHal(MockHal(profile), profile, sim_file=str(sim_file))
    with pytest.raises(OSError, match="no frames"):
        hal.camera()
    sim_file.write_text(json.dumps({"camera": str(frames)}))
    hal._sim_read_at = None
    camera = hal.camera()
    got = [camera.read() for _ in range(4)]
    assert [truth for _, truth in got] == [3, 9, None, 3]
    assert got[0][0].shape == (4, 6) and (got[1][0] == 80).all()
    assert (got[2][0] == rgb).all()
    no_camera = catalog.load("rpi-pico-w")
    with pytest.raises(OSError, match="declares no camera"):
        SimHal(MockHal(no_camera), no_camera, sim_file=str(sim_file)).camera()
    assert label_of("0042_7.pgm") == 7 and label_of("cat.pgm") is None and label_of("a_b.pgm") is None
    (frames / "0003_1.pgm").write_bytes(b"P5 4 4 255\n" + bytes(3))
    with pytest.raises(OSError, match="3 of 16 pixel bytes"):
        read_pnm(str(frames / "0003_1.pgm"))


def test_linux_hal_without_a_camera_library_names_what_to_install(monkeypatch):
    import builtins
    from edgefleet.boards import open_hal
    real_import = builtins.__import__

    def no_camera_libraries(name, *args, **kwargs):
        if name in ("picamera2", "cv2"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_camera_libraries)
    hal = open_hal("linux", catalog.load("rpi4"), {})
    with pytest.raises(OSError, match="python3-picamera2.*opencv-python-headless"):
        hal.camera()
    with pytest.raises(OSError, match="declares no camera"):
        open_hal("linux", {k: v for k, v in catalog.load("rpi4").items() if k != "camera"}, {}).camera()


def test_placement_puts_a_camera_workload_only_where_a_camera_is():
    workload = {"id": "cam", "model": "digits_conv", "input": {"kind": "camera", "rate_hz": 5}}
    pi = catalog.load("rpi4")
    node = {"id": "pi-1", "board": "rpi4", "runtime": "cpython", "state": "online",
            "caps": {"heap": 512 << 20, "models": ["digits_conv"], "camera": True}}
    from edgefleet import models
    manifest = models.manifest("digits_conv")
    assert placement.fits(workload, node, pi, manifest) is None
    blind = dict(node, id="pi-2", caps=dict(node["caps"], camera=False))
    assert placement.fits(workload, blind, pi, manifest) == "pi-2 has no camera"


def test_fleet_files_check_a_camera_input_as_the_node_would():
    base = {"id": "cam", "model": "digits_conv", "rate": 5}
    got = fleetfile.parse_workload(dict(base, input={"kind": "camera", "rate_hz": 10, "grayscale": True}), "workload[0]")
    assert got["input"]["kind"] == "camera"
    for source, why in (({"kind": "camera", "rate_hz": 1000}, "rate_hz"), ({"kind": "camera", "grayscale": "yes"}, "grayscale"),
                        ({"kind": "camera", "sensor": "adc0"}, "may not hold sensor"), ({"kind": "camera", "scale": True}, "scale")):
        with pytest.raises(ConfigError, match=why):
            fleetfile.parse_workload(dict(base, input=source), "workload[0]")
