"""A silent link never restarts inference (docs/reliability.md): a MicroPython node whose link
goes silent for longer than its keepalive takes to notice (the default 10 s keepalive: 15 s)
keeps its workers running on the same stream, declares no child hung, starves no watchdog, and
delivers what it inferred meanwhile once the link is back."""
import time

import pytest

from edgefleet.controller.sim.linkproxy import LinkProxy
from edgefleet.controller.sim.nodeprobe import NodeProbe
from edgefleet.controller.sim.simfleet import SimFleet

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]

NODE, BOARD = "mcu-cut", "rpi-pico-w"
KEEPALIVE_S = 10
CUT_S = 25
WORKLOAD = {"id": "w", "model": "digits_dense", "rate": 5, "input": {"kind": "samples"}}


def test_a_silent_link_neither_restarts_nor_rewinds_the_workers(mosquitto, tmp_path):
    proxy = LinkProxy(mosquitto.port).start()
    probe = NodeProbe(mosquitto, str(tmp_path), NODE, BOARD, keepalive=KEEPALIVE_S)
    # The node reaches the broker through the cuttable link; the probe listens directly.
    probe.fleet = SimFleet(str(tmp_path), mosquitto.host, proxy.port, [(NODE, BOARD)], keepalive=KEEPALIVE_S)
    try:
        with probe.start([WORKLOAD]):
            assert probe.wait_for(lambda p: len(p.of_kind("result")) >= 10, 40), "no results before the cut"
            proxy.cut()
            time.sleep(CUT_S)
            proxy.restore()
            cut_end = time.monotonic()
            newest = max(r["seq"] for r in probe.of_kind("result"))
            assert probe.wait_for(lambda p: max(r["seq"] for r in p.of_kind("result")) >= newest + CUT_S * 3, 60), \
                "the results inferred during the cut were not delivered after it"
            print("backlog delivered %.1f s after the link came back" % (time.monotonic() - cut_end))
            trouble = [e for e in probe.of_kind("event") if e["kind"] in ("hang", "crash", "degraded")]
            assert not trouble, "the link's silence was taken for a fault: %s" % trouble
            assert probe.board.boots == 1, "the node was reset during the cut"
            # One stream, never rewound: result n+1 is the input after result n's.
            by_seq = {r["seq"]: r["in"] for r in probe.of_kind("result") if r["boot"] == 1}
            seqs = sorted(by_seq)
            rewinds = [(s, by_seq[s], by_seq[s + 1]) for s in seqs if s + 1 in by_seq and by_seq[s + 1] != by_seq[s] + 1]
            assert not rewinds, "the stream jumped (seq, input, next input): %s" % rewinds[:5]
    finally:
        proxy.stop()
