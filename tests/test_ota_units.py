"""Update parts on the controller side, fast: bundles built, signed and inspected; the firmware's
streaming reader on a real built bundle; the firmware's Ed25519 and SHA-512 against
`cryptography` and hashlib; the sequence counter; the rollout
and transfer state machines (canary failure, health gate, rollback of a failed wave, resume)."""
import base64
import hashlib
import os
import random

import pytest

from support.secrets import assert_no_secret

from edgefleet.controller.deploy import bundle
from edgefleet.controller import cli
from edgefleet.controller.errors import EXIT_CONFIG
from edgefleet.controller.deploy.rollout import Gate, Rollout, Transfer, plan_waves
from edgefleet.firmware import bundle as wire
from edgefleet.firmware import update_errors as fw_errors
from edgefleet.firmware.update_errors import BadSignature, BundleError, CorruptBundle
from edgefleet.firmware import ed25519
from edgefleet.controller.install import keys

KEY = bytes(range(32))
PUB = keys.public(KEY)


@pytest.fixture(scope="module")
def mcu_bundle():
    return bundle.build("rpi-pico-w", "0.2.0", KEY, models=["digits_dense"], mpy_arch="x64", seq=3)


def test_firmware_ed25519_agrees_with_cryptography_on_random_vectors():
    rng = random.Random(7)
    for i in range(60):
        key = bytes(rng.getrandbits(8) for _ in range(32))
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 36, 111, 112, 128, 300))))
        assert ed25519.Sha512(data).digest() == hashlib.sha512(data).digest()
        sig = keys.sign(key, data)
        assert ed25519.verify(keys.public(key), sig, data)
        bad = bytearray(sig)
        bad[rng.randrange(64)] ^= 1 << rng.randrange(8)
        assert ed25519.verify(keys.public(key), bytes(bad), data) == keys.verify(keys.public(key), bytes(bad), data)
        assert not ed25519.verify(keys.public(key), sig, data + b"!")


def test_sequence_numbers_only_rise(tmp_path):
    path = str(tmp_path / "bundle.seq")
    seen = [bundle.next_seq(path) for _ in range(5)]
    assert seen == sorted(set(seen)) and seen[0] >= 1_700_000_000
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    os.remove(path)
    assert bundle.next_seq(path) >= seen[0], "still at least the clock after the counter is lost"


def test_bundle_lists_every_file_with_hash_and_is_signed(mcu_bundle):
    info = bundle.inspect(mcu_bundle, KEY)
    manifest = info["manifest"]
    assert manifest["board"] == "rpi-pico-w" and manifest["runtime"] == "micropython" and manifest["version"] == "0.2.0"
    paths = [f[0] for f in manifest["files"]]
    assert "firmware/node.mpy" in paths and "boards/hal_micropython.mpy" in paths
    assert "models/digits_dense/model.tflite" in paths
    assert not any(p.endswith(".py") for p in paths), "MCU code ships precompiled"
    assert manifest["mpy"] == 6
    assert manifest["seq"] == 3
    assert_no_secret(mcu_bundle, KEY)   # the signing key never travels in a bundle
    assert info["signed_ok"] and info["id"] == bundle.bundle_id(mcu_bundle)
    linux = bundle.inspect(bundle.build("rpi4", "0.2.0", KEY, models=["digits_dense"], seq=4), KEY)["manifest"]
    assert "firmware/procworker.py" in [f[0] for f in linux["files"]] and linux["mpy"] is None


def test_bad_bundles_are_refused_with_clear_errors(mcu_bundle):
    with pytest.raises(BadSignature, match="signature"):
        bundle.inspect(mcu_bundle, bytes(32))
    with pytest.raises(BundleError, match="sequence number"):
        bundle.build("rpi4", "0.2.0", KEY, models=[], seq=0)
    flipped = bytearray(mcu_bundle)
    flipped[-10] ^= 1
    with pytest.raises(CorruptBundle, match="sha256"):
        bundle.inspect(bytes(flipped), KEY)
    with pytest.raises(CorruptBundle, match="truncated"):
        bundle.inspect(mcu_bundle[:-300], KEY)
    with pytest.raises(CorruptBundle, match="not an edgefleet bundle"):
        bundle.inspect(b"PK\x03\x04" + mcu_bundle[4:], KEY)
    with pytest.raises(BundleError, match="unknown board"):
        bundle.build("toaster", "1", KEY)


def test_firmware_reader_unpacks_a_controller_bundle_streaming(mcu_bundle, tmp_path):
    dest = str(tmp_path / "slot_b")
    os.mkdir(dest)
    reader = wire.BundleReader(PUB, "rpi-pico-w", "micropython", dest, mpy=6)
    for i in range(0, len(mcu_bundle), 1536):
        reader.feed(mcu_bundle[i:i + 1536])
    manifest = reader.finish()
    assert wire.verify_slot(dest) == manifest
    with open(os.path.join(dest, "models/digits_dense/model.tflite"), "rb") as f:
        want = [e[2] for e in bundle.inspect(mcu_bundle)["manifest"]["files"] if e[0].endswith("model.tflite")]
        assert [hashlib.sha256(f.read()).hexdigest()] == want
    for board, runtime, mpy, error in (("esp32", "micropython", 6, fw_errors.WrongBoard),
                                       ("rpi-pico-w", "micropython", 5, fw_errors.WrongBoard)):
        reader = wire.BundleReader(PUB, board, runtime, str(tmp_path / "x"), mpy=mpy)
        with pytest.raises(error):
            reader.feed(mcu_bundle[:12000])


def test_slotted_image_holds_the_public_key_only(tmp_path):
    from edgefleet.boards import catalog
    from edgefleet.controller.install import image
    cfg = image.node_config("n1", catalog.load("rpi-pico-w"), "127.0.0.1", 1883, simulated=True)
    image.write_slotted_image(str(tmp_path / "flash"), cfg, key=KEY)
    assert keys.parse((tmp_path / "flash" / keys.BOARD_FILE).read_text()) == PUB
    assert not (tmp_path / "flash" / keys.LEGACY_FILE).exists()
    assert_no_secret(str(tmp_path / "flash"), KEY)


def test_cli_deploy_refuses_a_bundle_this_controller_did_not_sign(tmp_path, capsys, monkeypatch, mcu_bundle):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    keys.create()   # this controller's key is not KEY
    path = tmp_path / "foreign.efb"
    path.write_bytes(mcu_bundle)
    assert cli.main(["deploy", str(path), "--to", "n1,n2", "--broker", "127.0.0.1:9"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "signature does not verify under this controller's signing key" in err, err


def test_cli_bundle_writes_a_verifiable_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_HOME", str(tmp_path))
    assert cli.main(["bundle", "--board", "rpi4", "--version", "9.9"]) == EXIT_CONFIG
    assert "no signing key" in capsys.readouterr().err
    key = keys.create()
    out = str(tmp_path / "b.efb")
    assert cli.main(["bundle", "--board", "rpi4", "--version", "9.9", "--models", "digits_dense", "-o", out]) == 0
    with open(out, "rb") as f:
        assert bundle.inspect(f.read(), key)["manifest"]["version"] == "9.9"


# -- state machines ------------------------------------------------------------------------

DATA = bytes(range(256)) * 20   # 5 KB: four chunks


def _answer(transfer, out, state="receiving"):
    """What a node would answer to the messages a transfer sent."""
    msg = out[0][1]
    if msg["op"] == "begin":
        return {"state": state, "off": 0, "id": msg["id"]}
    return {"state": state, "off": msg["off"] + len(base64.b64decode(msg["data"])), "id": msg["id"]}


class FakeNode:
    """The node's side of a transfer: accepts only the chunk at its offset, answers each."""

    def __init__(self):
        self.off = 0
        self.connected = True

    def answer(self, msg):
        if not self.connected:
            return None
        if msg["op"] == "begin":
            return {"state": "receiving", "off": self.off, "id": msg["id"]}
        if msg["off"] == self.off:
            self.off += len(base64.b64decode(msg["data"]))
        return {"state": "receiving", "off": self.off, "id": msg["id"]}


def test_transfer_pipelines_chunks_in_order_and_resumes_from_the_node_offset():
    t = Transfer("n1", DATA * 4, "b1", "0.2.0", 5000, window=3)
    node = FakeNode()
    pending = t.begin(0.0)
    now, lost_once = 0.0, False
    while pending and node.off < len(t.data):
        now += 0.01
        _, msg = pending.pop(0)
        if msg["op"] == "chunk":
            assert msg["off"] < node.off + 3 * 1536 + 1, "never more than the window ahead of the node"
        if not lost_once and msg["op"] == "chunk" and msg["off"] == 3 * 1536:
            lost_once = True
            node.connected = False   # the link drops: this chunk and the rest in flight are lost
        reply = node.answer(msg)
        if reply is not None:
            pending += t.on_state(reply, now)
        if not pending:
            node.connected = True
            now += 5.0
            pending += t.tick(now)   # no progress: ask the node where it is
    assert node.off == len(t.data) and lost_once
    assert t.bytes_sent < len(t.data) + 5 * 1536, "a resume resends only what was lost"
    assert t.on_state({"state": "switching", "off": len(t.data), "id": "b1", "ver": "0.2.0"}, now) == []
    t.on_state({"state": "confirmed", "off": 0, "id": "b1", "ver": "0.2.0"}, now)
    assert t.status == "confirmed" and t.progress() == len(t.data)
    # A rebooted node (new hello) that lost the stream gets a new begin.
    t2 = Transfer("n2", DATA, "b1", "0.2.0", 5000)
    t2.begin(0)
    assert t2.on_reboot(1)[0][1]["op"] == "begin"
    assert t2.on_state({"state": "idle", "off": 0, "id": "b1"}, 2)[0][1]["op"] == "begin"


def test_a_node_short_of_heap_gets_the_chunk_size_it_asks_for():
    t = Transfer("n1", DATA * 4, "b1", "0.2.0", 5000, window=3)
    t.begin(0.0)
    sent = t.on_state({"state": "receiving", "off": 0, "id": "b1", "chunk": 512}, 0.1)
    pieces = [base64.b64decode(m["data"]) for _, m in sent]
    assert [len(p) for p in pieces] == [512, 512, 512] and [m["off"] for _, m in sent] == [0, 512, 1024]
    assert b"".join(pieces) == t.data[:1536]
    # Never larger chunks than the controller's, nor ones too small to be worth a message.
    t.on_state({"state": "receiving", "off": 512, "id": "b1", "chunk": 1 << 20}, 0.2)
    assert t.chunk == 512
    t.on_state({"state": "receiving", "off": 1024, "id": "b1", "chunk": 1}, 0.3)
    assert t.chunk == 256


def _drive_to_confirmed(rollout, nodes, now):
    """Every node of the current wave takes the bundle, switches and confirms."""
    out = []
    for node in nodes:
        out += rollout.handle(node, "ota_state", {"id": "b1", "state": "switching", "off": len(DATA), "ver": "0.2.0"}, now)
        out += rollout.handle(node, "hello", {"boot": 2}, now)
        out += rollout.handle(node, "ota_state", {"id": "b1", "state": "confirmed", "off": 0, "ver": "0.2.0"}, now)
    return out


def _hb(boot, state="running", err=None):
    return {"boot": boot, "wl": [{"id": "w", "state": state, "n": 5, "err": err}]}


def test_waves_are_canary_then_batches():
    assert plan_waves(["a", "b", "c", "d", "e"], canary=1, batch=2) == [["a"], ["b", "c"], ["d", "e"]]
    assert plan_waves(["a", "b", "c", "d", "e"]) == [["a"], ["b", "c"], ["d", "e"]]
    assert plan_waves(["a"], canary=3) == [["a"]]


def test_rollout_goes_wave_by_wave_on_health():
    nodes = ["a", "b", "c"]
    ro = Rollout(DATA, "b1", "0.2.0", nodes, canary=1, batch=2, gate=Gate(soak_s=1.0, max_latency_us=50000))
    out = ro.start(0)
    assert [n for n, m in out] == ["a"] and out[0][1]["op"] == "begin"
    _drive_to_confirmed(ro, ["a"], 1)
    assert ro.tick(1.0) == [] and ro.soak_from == 1.0
    ro.handle("a", "hb", _hb(2), 1.5)
    ro.handle("a", "result", {"us": 20000}, 1.6)
    out = ro.tick(2.1)
    assert sorted(n for n, m in out) == ["b", "c"] and ro.wave == 1
    _drive_to_confirmed(ro, ["b", "c"], 3)
    ro.tick(3)
    for node in ("b", "c"):
        ro.handle(node, "hb", _hb(2), 3.5)
        ro.handle(node, "result", {"us": 10000}, 3.6)
    ro.tick(4.5)
    assert ro.status == "done" and ro.progress()["confirmed"] == 3


def test_canary_failure_stops_the_rollout():
    ro = Rollout(DATA, "b1", "0.2.0", ["a", "b", "c"], canary=1)
    ro.start(0)
    ro.handle("a", "ota_state", {"id": "b1", "state": "switching", "off": len(DATA), "ver": "0.2.0"}, 1)
    # The canary reverted by itself: its new version never became healthy.
    out = ro.handle("a", "ota_state", {"id": "b1", "state": "reverted", "off": 0, "ver": "0.2.0",
                                       "err": "not healthy within 5000 ms (w failed n=0 bad model)"}, 8)
    assert ro.status == "failed" and "wave 1/3" in ro.error and "bad model" in ro.error
    assert out == [] and set(ro.transfers) == {"a"}, "no other node was touched"
    assert ro.tick(100) == []


def test_a_wave_failing_its_health_gate_is_rolled_back():
    ro = Rollout(DATA, "b1", "0.2.0", ["a", "b", "c"], canary=1, gate=Gate(soak_s=1.0, max_latency_us=1000))
    ro.start(0)
    _drive_to_confirmed(ro, ["a"], 1)
    ro.tick(1)
    ro.handle("a", "hb", _hb(2), 1.2)
    ro.handle("a", "result", {"us": 30000}, 1.3)
    out = ro.tick(2.5)
    assert ro.status == "rolling_back" and "latency" in ro.error
    assert out == [("a", {"v": 1, "id": "b1", "op": "rollback"})]
    ro.handle("a", "ota_state", {"id": "b1", "state": "rolledback", "off": 0, "ver": "0.1.0"}, 2.6)
    ro.handle("a", "hb", _hb(2), 2.7)        # still the old boot: not back yet
    assert ro.status == "rolling_back"
    ro.handle("a", "hb", _hb(3), 4.0)        # booted again, workloads running
    assert ro.status == "failed" and ro.rolled_back == {"a"} and ro.rolled_back_at == 4.0


def test_gate_counts_failing_workloads_as_errors():
    gate = Gate(soak_s=0, max_error_rate=0.1)
    assert gate.verdict({"workloads": 10, "failed": 2, "results": 5, "us": 500}).startswith("error rate")
    assert gate.verdict({"workloads": 10, "failed": 1, "results": 5, "us": 500}) is None
    assert "results" in gate.verdict({"workloads": 10, "failed": 0, "results": 0, "us": 0})
