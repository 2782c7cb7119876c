# The node runtime's pure parts, under CPython and MicroPython.
import os

from firmware import assignment, bootguard, config, flashfile
from firmware.backends import top1
from firmware.errors import ConfigError
from firmware.sources import SampleSource, SourceError
from unit import raises

PROFILE = {"name": "rpi-pico-w", "runtime": "micropython", "heap_bytes": 196608}


def _spec(wid, model="m", rate=1):
    return {"id": wid, "model": model, "rate": rate, "input": {"kind": "samples"}}


def test_assignment_changes_start_stop_and_restart_changed_specs():
    running = {"a": _spec("a"), "b": _spec("b"), "c": _spec("c", rate=2)}
    stop, start = assignment.changes(running, [_spec("a"), _spec("c", rate=5), _spec("d")])
    assert stop == ["b", "c"], stop
    assert [s["id"] for s in start] == ["c", "d"]
    assert assignment.changes(running, [_spec("a"), _spec("b"), _spec("c", rate=2)]) == ([], [])
    assert assignment.changes({}, []) == ([], [])


def test_assignment_ignores_older_epochs():
    assert assignment.accept(None, {"epoch": 1})
    assert assignment.accept(5, {"epoch": 5})
    assert not assignment.accept(5, {"epoch": 4})


def test_config_defaults_and_errors_name_the_key():
    cfg = config.parse({"node": "mcu-1", "board": "rpi-pico-w", "profile": PROFILE, "broker": {"port": 1999}})
    assert cfg["broker"]["port"] == 1999 and cfg["broker"]["host"] == "127.0.0.1"
    assert cfg["hb_interval_ms"] == 1000 and cfg["topic_prefix"] == "ef"
    assert raises(ConfigError, config.parse, {"board": "x", "profile": PROFILE}).field == "node"
    assert raises(ConfigError, config.parse, {"node": "BAD ID", "board": "x", "profile": PROFILE}).field == "node"
    err = raises(ConfigError, config.parse, {"node": "n", "board": "x", "profile": PROFILE, "broker": {"port": 0}})
    assert err.field == "broker.port"
    err = raises(ConfigError, config.parse, {"node": "n", "board": "x", "profile": PROFILE, "hb_interval_ms": 5000})
    assert err.field == "hb_interval_ms"
    raises(ConfigError, config.load, "/nonexistent/config.json")


def _tmpdir(name):
    path = "/tmp/edgefleet-fwtest-" + name
    flashfile.ensure_dir(path)
    return path


def test_boot_counter_persists_and_flash_records_replace_atomically():
    d = _tmpdir("boot")
    for f in ("boot.json", "boot.json.tmp"):
        try:
            os.remove(d + "/" + f)
        except OSError:
            pass
    assert bootguard.next_boot(d) == 1
    assert bootguard.next_boot(d) == 2
    flashfile.write(d + "/x.json", {"a": 1})
    assert flashfile.read(d + "/x.json") == {"a": 1}
    with open(d + "/torn.json", "w") as f:
        f.write('{"a": ')
    assert flashfile.read(d + "/torn.json", "default") == "default"


def test_sample_source_cycles_through_inputs_and_labels():
    d = _tmpdir("samples")
    with open(d + "/samples.bin", "wb") as f:
        f.write(bytes([1, 2, 3, 4, 5, 6]))
    with open(d + "/labels.bin", "wb") as f:
        f.write(bytes([7, 8, 9]))
    src = SampleSource(d, 2, start=1)
    buf = bytearray(2)
    assert src.read_into(buf) == (1, 8) and bytes(buf) == bytes([3, 4])
    assert src.read_into(buf) == (2, 9)
    # Positions count on past the end of the samples; the input wraps around.
    assert src.read_into(buf) == (3, 7) and bytes(buf) == bytes([1, 2])
    src.close()
    raises(SourceError, SampleSource, d, 100)
    raises(SourceError, SampleSource, d + "/missing", 2)


def test_top1_reads_int8_from_lists_and_byte_buffers():
    assert top1([-128, 5, 127, 3], (1 / 256, -128)) == (2, 255 / 256)
    # In a bytearray, -1 is 255 and must not beat 5.
    label, score = top1(bytearray([255, 5, 128]), (0.5, 0))
    assert label == 1 and score == 2.5
