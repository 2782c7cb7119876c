"""A camera workload end to end on a CPython node: a simulated Pi-class board whose simulated
camera (boards/sim_camera.py) serves 32x32 grey PGM frames made from digits_conv's held-out
8x8 inputs, the real firmware taking them at a rate, area-resizing them back to the model's
8x8x1 and quantising them to int8 (firmware/source_camera.py), through its isolated inference
process; the real controller places the workload only where a camera is and stores the results
with each frame's true label (from its file name). Real mosquitto."""
import os
import sqlite3

import numpy
import pytest

from edgefleet import models
from edgefleet.controller.fleet.service import ControllerService
from edgefleet.controller.sim.simfleet import SimFleet
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

MODEL_DIR = os.path.join(os.path.dirname(models.__file__), "digits_conv")
FRAMES = 60
UPSCALE = 4
CAMERA = {"id": "doorbell", "model": "digits_conv", "rate": 10.0, "replicas": 1,
          "input": {"kind": "camera", "rate_hz": 10}}
# Only the microcontroller may run this one, and it has no camera: placement says so.
BLIND = dict(CAMERA, id="blind", constraints={"runtime": "micropython"})


def write_frames(folder):
    """digits_conv's held-out inputs as camera frames: int8 q is the pixel q + 128 (the model's
    input quantisation is 1/255 with zero point -128, and the source's default scale 1/255),
    each pixel enlarged to UPSCALE x UPSCALE so the source's resize has work to do."""
    samples = numpy.fromfile(os.path.join(MODEL_DIR, "samples.bin"), dtype=numpy.int8).reshape(-1, 8, 8)
    labels = numpy.fromfile(os.path.join(MODEL_DIR, "labels.bin"), dtype=numpy.uint8)
    os.makedirs(folder)
    for i in range(FRAMES):
        pixels = (samples[i].astype(numpy.int16) + 128).astype(numpy.uint8)
        big = numpy.kron(pixels, numpy.ones((UPSCALE, UPSCALE), dtype=numpy.uint8))
        with open(os.path.join(folder, "%04d_%d.pgm" % (i, labels[i])), "wb") as f:
            f.write(b"P5\n%d %d\n255\n" % (big.shape[1], big.shape[0]) + big.tobytes())
    return labels[:FRAMES]


def _results(db_path):
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT node, label, truth FROM results WHERE workload='doorbell' ORDER BY seq").fetchall()
    finally:
        db.close()


def test_a_camera_workload_classifies_frames_on_the_pi_that_has_the_camera(mosquitto, tmp_path):
    frames = str(tmp_path / "frames")
    labels = write_frames(frames)
    db_path = str(tmp_path / "fleet.db")
    controller = ControllerService(mosquitto.host, mosquitto.port, db_path=db_path, manifests=models.manifests(),
                                   workloads=[CAMERA, BLIND]).start()
    fleet = SimFleet(str(tmp_path / "fleet"), mosquitto.host, mosquitto.port, [])
    try:
        fleet.add("pi-1", "rpi4")
        fleet.set_sim("pi-1", camera=frames)      # on the board's flash before it boots
        fleet.add("mcu-1", "rpi-pico-w")
        fleet.start()
        wait_until(lambda: len(_results(db_path)) >= 40, 90, "40 frames classified")
        snap = controller.snapshot()
        placed = {w["id"]: w for w in snap["workloads"]}
        assert placed["doorbell"]["nodes"] == ["pi-1"]
        assert "mcu-1 has no camera" in placed["blind"]["pending"], placed["blind"]
        rows = _results(db_path)
        assert {node for node, _, _ in rows} == {"pi-1"}
        # Frames come in file order from position 0: the true labels are the files'.
        assert [truth for _, _, truth in rows[:FRAMES]] == [int(v) for v in labels[:len(rows[:FRAMES])]]
        accuracy = sum(label == truth for _, label, truth in rows) / len(rows)
        assert accuracy > 0.8, accuracy    # chance is 0.1
    finally:
        fleet.stop()
        controller.stop()
