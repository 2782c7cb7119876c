"""Writes tests/vectors/messages.json: the protocol's accept/reject vectors.

Kept as a script so each vector's intent sits next to it; the JSON file is what the firmware
(CPython and MicroPython) and controller tests read. Run: python tests/vectors/make_messages.py
"""
import json
import os

HELLO = {"v": 1, "node": "mcu-1", "board": "rpi-pico-w", "runtime": "micropython", "fw": "0.1.0", "boot": 3,
         "caps": {"heap": 196608, "flash": 868352, "backends": ["engine"], "models": ["digits_dense"]}}
STATUS = {"v": 1, "node": "mcu-1", "state": "online", "boot": 3}
HB = {"v": 1, "node": "pi-1", "boot": 1, "seq": 42, "up": 42100, "cpu": 37.5, "mem_free": 301234567,
      "mem_total": 4123456789, "power": {"src": "mains", "pct": None, "mw": 3400.0}, "temp": 48.2,
      "wl": [{"id": "digits", "state": "running", "n": 410, "err": None}]}
RESULT = {"v": 1, "node": "mcu-2", "boot": 7, "seq": 1, "wl": "digits", "up": 5123, "label": 4,
          "score": 0.96875, "us": 18250, "truth": 4, "in": 17}
EVENT = {"v": 1, "node": "mcu-2", "boot": 7, "up": 900, "level": "warn", "kind": "bad_message",
         "msg": "assign: field 'epoch' must be int, got str", "data": {"topic": "ef/node/mcu-2/assign"}}
LOG = {"v": 1, "node": "mcu-2", "boot": 7, "up": 1500, "lines": [
    "edgefleet-node: link lost: keepalive timeout", "edgefleet-node: w crashed: InjectedFault: boom; restarting it"]}
ASSIGN = {"v": 1, "epoch": 12, "wl": [{"id": "digits", "model": "digits_dense", "rate": 5,
                                        "input": {"kind": "samples", "start": 0}}]}
ACK = {"v": 1, "boot": 7, "seq": 250}
CMD = {"v": 1, "id": "c-17", "op": "ping", "args": {}}
REPLY = {"v": 1, "id": "c-17", "ok": True, "data": {"up": 1234}}
CTRL = {"v": 1, "state": "online", "ctrl": "ctrl-1"}
OTA_BEGIN = {"v": 1, "id": "a81998fc4d742c7c", "op": "begin", "size": 111228, "ver": "0.2.0", "window_ms": 30000}
OTA_CHUNK = {"v": 1, "id": "a81998fc4d742c7c", "op": "chunk", "off": 3072, "data": "RUZCMQAAEIQ="}
OTA_STATE = {"v": 1, "node": "mcu-1", "boot": 4, "id": "a81998fc4d742c7c", "state": "receiving", "off": 4608}
OP_REQ = {"v": 1, "id": "5f0c2a9e71d3b684", "op": "move", "args": {"workload": "digits", "node": "pi-2"}}
OP_REPLY = {"v": 1, "id": "5f0c2a9e71d3b684", "ok": True, "part": 0, "parts": 1,
            "data": "{\"message\": \"moving digits from pi-1 to pi-2\"}"}
# An input of a `topic` workload (PREFIX/wl/WORKLOAD/input): 4 int8 bytes in base64.
INPUT = {"v": 1, "seq": 1041, "data": "AP9/gA==", "truth": 7}
AUDIT = {"v": 1, "ev": {"ts": 1700000000.5, "node": "pi-2", "level": "info", "kind": "drain",
                        "msg": "operator drains pi-2 (1 workload to move)", "data": None}}


def with_(msg, **changes):
    out = json.loads(json.dumps(msg))
    for key, value in changes.items():
        if value is DELETE:
            out.pop(key)
        else:
            out[key] = value
    return out


DELETE = object()


def vectors():
    valid = [
        ("hello", HELLO), ("hello", with_(HELLO, slot="slot_b")), ("status", STATUS), ("status", with_(STATUS, state="offline")), ("hb", HB),
        ("hb", with_(HB, temp=None, power={"src": "battery", "pct": 63.5, "mw": 110}, wl=[])),
        ("hb", with_(HB, state="safe")),
        ("result", RESULT), ("result", with_(RESULT, truth=DELETE, **{"in": DELETE})),
        # A workload's output spec (docs/protocol.md "Results"): the k best classes, or every value.
        ("result", with_(RESULT, top=[[4, 0.96875], [9, 0.01953]])),
        ("result", with_(RESULT, out=[0.5, -1.25, 3, 0.0])),
        ("event", EVENT), ("event", with_(EVENT, data=DELETE)),
        ("log", LOG), ("log", with_(LOG, dropped=84)), ("log", with_(LOG, lines=[], dropped=3)),
        ("log", with_(LOG, lines=["x" * 160])), ("assign", ASSIGN), ("assign", with_(ASSIGN, wl=[])),
        # A sensor's windows in, every output and a watched one out (docs/protocol.md, assign).
        ("assign", with_(ASSIGN, wl=[{"id": "vibration", "model": "signal_anomaly", "rate": 6.25,
                                      "input": {"kind": "sensor", "sensor": "adc0", "rate_hz": 200, "hop": 32,
                                                "scale": 3.05e-05, "offset": -1.0, "start": 0},
                                      "output": {"kind": "values", "watch": {"index": 0, "above": 0.5}, "pin": 5}}])),
        ("hello", with_(HELLO, caps=with_(HELLO["caps"], sensors=["adc0"]))),
        # A camera's frames in (Pi-class boards whose profile has one: caps.camera).
        ("assign", with_(ASSIGN, wl=[{"id": "doorbell", "model": "digits_conv", "rate": 5,
                                      "input": {"kind": "camera", "rate_hz": 5, "scale": 0.00392, "offset": 0.0,
                                                "grayscale": True, "start": 0}}])),
        ("hello", with_(HELLO, caps=with_(HELLO["caps"], camera=True))),
        # The interpreter's word size: placement reads the heap figures measured at it.
        ("hello", with_(HELLO, caps=with_(HELLO["caps"], word=32))),
        ("ack", ACK), ("ack", with_(ACK, seq=0)), ("cmd", CMD), ("cmd", with_(CMD, args=DELETE)), ("reply", REPLY),
        ("reply", {"v": 1, "id": "c-18", "ok": False, "error": "unknown op 'dance'"}), ("ctrl_status", CTRL),
        ("ota", OTA_BEGIN), ("ota", OTA_CHUNK), ("ota", {"v": 1, "id": "rollback-1", "op": "rollback"}),
        ("ota_state", OTA_STATE),
        ("ota_state", with_(OTA_STATE, state="rejected", off=0, err="bundle is for board 'esp32', this node is 'rpi-pico-w'")),
        ("ota_state", with_(OTA_STATE, state="confirmed", off=0, ver="0.2.0")),
        ("ota_state", with_(OTA_STATE, chunk=512)),   # a small board asks for smaller chunks
        ("op_req", OP_REQ), ("op_req", {"v": 1, "id": "a1", "op": "status", "args": {}}),
        ("op_reply", OP_REPLY), ("op_reply", with_(OP_REPLY, part=2, parts=3)),
        ("op_reply", {"v": 1, "id": "a1", "ok": False, "part": 0, "parts": 1, "error": "no workload 'nope'"}),
        ("audit", AUDIT),
        ("input", INPUT), ("input", with_(INPUT, truth=DELETE, seq=0)),
        ("hb", with_(HB, wl=[{"id": "cam", "state": "running", "n": 12, "err": None, "seen": 1041, "dropped": 2}])),
        ("assign", with_(ASSIGN, wl=[{"id": "cam", "model": "digits_dense", "rate": 10,
                                      "input": {"kind": "topic", "start": 1000, "until": 1050}}])),
        # Unknown extra fields are ignored, for forward compatibility.
        ("status", with_(STATUS, extra="ignored")),
    ]
    invalid = [
        ("hello", with_(HELLO, v=2), "v"), ("hello", with_(HELLO, v=DELETE), "v"),
        ("hello", with_(HELLO, runtime="java"), "runtime"), ("hb", with_(HB, state="offline"), "state"), ("hello", with_(HELLO, node="Mcu 1"), "node"),
        ("hello", with_(HELLO, caps=[]), "caps"), ("hello", with_(HELLO, slot=2), "slot"), ("status", with_(STATUS, state="sleepy"), "state"),
        ("hb", with_(HB, cpu="37"), "cpu"), ("hb", with_(HB, power={"src": "nuclear", "pct": None, "mw": None}), "power.src"),
        ("hb", with_(HB, power={"src": "mains"}), "power.pct"),
        ("hb", with_(HB, wl=[{"id": "x", "state": "running", "n": "many", "err": None}]), "wl[0].n"),
        ("result", with_(RESULT, seq=0), "seq"), ("result", with_(RESULT, label=True), "label"),
        ("result", with_(RESULT, out=[0.5, "high"]), "out"), ("result", with_(RESULT, top=[4, 0.9]), "top"),
        ("hello", with_(HELLO, caps=with_(HELLO["caps"], sensors="adc0")), "caps.sensors"),
        ("hello", with_(HELLO, caps=with_(HELLO["caps"], camera="csi0")), "caps.camera"),
        ("hello", with_(HELLO, caps=with_(HELLO["caps"], word="32-bit")), "caps.word"),
        ("result", with_(RESULT, boot=DELETE), "boot"), ("event", with_(EVENT, level="panic"), "level"),
        ("log", with_(LOG, lines="one line"), "lines"), ("log", with_(LOG, lines=["ok", 7]), "lines"),
        ("log", with_(LOG, boot=DELETE), "boot"),
        ("assign", with_(ASSIGN, epoch="12"), "epoch"),
        ("assign", with_(ASSIGN, wl=[{"id": "a", "model": "m", "rate": 0, "input": {"kind": "samples"}}]), "wl[0].rate"),
        ("assign", with_(ASSIGN, wl=[{"id": "a", "model": "m", "rate": 1, "input": {"kind": "telepathy"}}]), "wl[0].input.kind"),
        ("assign", with_(ASSIGN, wl=[{"id": "a", "rate": 1, "input": {"kind": "samples"}}]), "wl[0].model"),
        ("assign", with_(ASSIGN, wl=["digits"]), "wl[0]"),
        ("assign", with_(ASSIGN, wl=[ASSIGN["wl"][0], ASSIGN["wl"][0]]), "wl[1].id"),
        ("ota", with_(OTA_BEGIN, op="flash"), "op"), ("ota", with_(OTA_CHUNK, off="3072"), "off"),
        ("ota", with_(OTA_CHUNK, id=DELETE), "id"), ("ota_state", with_(OTA_STATE, state="done"), "state"),
        ("ota_state", with_(OTA_STATE, off=DELETE), "off"),
        ("ota_state", with_(OTA_STATE, chunk="512"), "chunk"),
        ("ack", with_(ACK, seq=-1), "seq"), ("cmd", with_(CMD, op=None), "op"), ("reply", with_(REPLY, ok="yes"), "ok"),
        # Validation limits (docs/protocol.md): values a registry or placement cannot take.
        ("hb", with_(HB, seq=2 ** 63), None), ("result", with_(RESULT, us=-2 ** 63 - 1), None),
        ("hello", with_(HELLO, caps={"heap": "lots"}), "caps.heap"),
        ("hello", with_(HELLO, caps={"models": [7]}), "caps.models"),
        ("hello", with_(HELLO, caps={"models": ["../../etc"]}), "caps.models"),
        ("hello", with_(HELLO, caps={"labels": [{}]}), "caps.labels"),
        ("assign", with_(ASSIGN, wl=[with_(ASSIGN["wl"][0], model="a/b")]), "wl[0].model"),
        ("hb", with_(HB, wl=[{"id": "x\n", "state": "running", "n": 1, "err": None}]), "wl[0].id"),
        ("result", with_(RESULT, wl=""), "wl"),
        # Operator requests: a reply topic is built from the id, so it is a name; the op is one
        # the controller knows; args is an object.
        ("op_req", with_(OP_REQ, id="../#"), "id"), ("op_req", with_(OP_REQ, op="reboot"), "op"),
        ("op_req", with_(OP_REQ, args=DELETE), "args"), ("op_req", with_(OP_REQ, args=["x"]), "args"),
        ("op_reply", with_(OP_REPLY, part="0"), "part"), ("op_reply", with_(OP_REPLY, data={"a": 1}), "data"),
        ("audit", with_(AUDIT, ev="drain"), "ev"),
        # Inputs come from outside the fleet's own code: every field is checked.
        ("input", with_(INPUT, seq=-1), "seq"), ("input", with_(INPUT, seq="5"), "seq"),
        ("input", with_(INPUT, data=DELETE), "data"), ("input", with_(INPUT, data=[0, 255]), "data"),
        ("input", with_(INPUT, truth=1.5), "truth"), ("input", with_(INPUT, v=2), "v"),
        ("input", with_(INPUT, data="A" * 4100), ""),
        ("hb", with_(HB, wl=[{"id": "cam", "state": "running", "n": 1, "err": None, "seen": "1"}]), "wl[0].seen"),
    ]
    out = []
    for kind, msg in valid:
        out.append({"kind": kind, "payload": json.dumps(msg), "valid": True})
    for kind, msg, field in invalid:
        out.append({"kind": kind, "payload": json.dumps(msg), "valid": False, "field": field})
    # Payloads that are not even JSON objects, and one over the size limit.
    out.append({"kind": "status", "payload": "{\"v\": 1, \"node\": ", "valid": False, "field": None})
    out.append({"kind": "status", "payload": "[1, 2, 3]", "valid": False, "field": None})
    out.append({"kind": "ack", "payload": json.dumps(with_(ACK, pad="x" * 300)), "valid": False, "field": ""})
    # Lines each within 160 characters that together pass the log message's limit: the node
    # sends fewer per message.
    out.append({"kind": "log", "payload": json.dumps(with_(LOG, lines=["x" * 160] * 14)), "valid": False, "field": ""})
    # Non-finite numbers (Python's json writes and reads these literals; JSON has none).
    out.append({"kind": "hb", "payload": json.dumps(with_(HB, cpu=float("nan"))), "valid": False, "field": None})
    out.append({"kind": "hb", "payload": json.dumps(with_(HB, temp=float("inf"))), "valid": False, "field": None})
    out.append({"kind": "result", "payload": json.dumps(RESULT).replace("0.96875", "1e999"), "valid": False,
                "field": None})
    # Nesting past the limit, within the size limit: the JSON parsers recurse per level.
    out.append({"kind": "hb", "payload": "[" * 1000 + "]" * 1000, "valid": False, "field": None})
    out.append({"kind": "event", "payload": json.dumps(with_(EVENT, data={"a": [[[[[[[[[1]]]]]]]]]})), "valid": False,
                "field": None})
    # Brackets inside strings are text, not nesting.
    out.append({"kind": "event", "payload": json.dumps(dict(EVENT, msg="[[[[[[[[[[[{{{{{{{{{{\\\"")), "valid": True})
    return out


TOPICS = [
    {"topic": "ef/node/mcu-1/hello", "node": "mcu-1", "kind": "hello"},
    {"topic": "ef/node/pi_4/result", "node": "pi_4", "kind": "result"},
    {"topic": "ef/ctrl/status", "node": "", "kind": "ctrl_status"},
    {"topic": "ef/node/mcu-1/ota", "node": "mcu-1", "kind": "ota"},
    {"topic": "ef/node/pi-2/ota_state", "node": "pi-2", "kind": "ota_state"},
    {"topic": "ef/node/mcu-1/log", "node": "mcu-1", "kind": "log"},
    {"topic": "ef/ctrl/op/req", "node": "", "kind": "op_req"},
    {"topic": "ef/ctrl/op/reply/a1", "node": "", "kind": "op_reply"},
    {"topic": "ef/ctrl/audit", "node": "", "kind": "audit"},
    {"topic": "ef/wl/cam-1/input", "node": "cam-1", "kind": "input"},
    {"topic": "ef/wl/Cam/input", "error": True},
    {"topic": "ef/wl/cam-1/result", "error": True},
    {"topic": "ef/wl/cam-1/input/x", "error": True},
    {"topic": "ef/ctrl/op/reply/A#", "error": True},
    {"topic": "ef/ctrl/op/reply/a1/x", "error": True},
    {"topic": "ef/node/MCU/hello", "error": True},
    {"topic": "ef/node/mcu-1/launch", "error": True},
    {"topic": "ef/node/mcu-1/hello/x", "error": True},
    {"topic": "other/node/mcu-1/hello", "error": True},
    {"topic": "ef/node//hello", "error": True},
]

# The ctrl-level kinds only the controller and operators speak (controller/opwire.py): boards
# never receive them, so their vectors are marked "host" and the firmware's codec skips them.
HOST_KINDS = ("op_req", "op_reply", "audit")


def marked(entries):
    for entry in entries:
        if entry.get("kind") in HOST_KINDS or "/ctrl/op/" in entry.get("topic", "") or \
                entry.get("topic") == "ef/ctrl/audit":
            entry["host"] = True
    return entries


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "messages.json"), "w") as f:
        json.dump({"messages": marked(vectors()), "topics": marked(TOPICS)}, f, indent=1)
        f.write("\n")
