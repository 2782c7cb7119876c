# The wire protocol of docs/protocol.md as data: topics, message schemas, size limits.
# Shared by the node runtime (MicroPython and CPython) and the controller, so both sides accept
# and reject exactly the same messages.
import json

from .errors import ProtocolError

VERSION = 1
DEFAULT_PREFIX = "ef"

# Every message kind in one table, a line each: kind, byte limit, QoS, retained (r) or not (-),
# then its fields as "field:type" items, type one of int num str bool obj list, name (a plain
# name, valid_node_id()), and names strs (lists of those), with a trailing "?" for an optional
# field and "|null" where JSON null is allowed. One string, not a dict of tuples, because a board
# keeps every loaded constant in its heap: the dict form cost ~1.9 KB there, this ~100 bytes. It is
# read by limit(), fields() and delivery(), and by the table in docs/protocol.md's tests.
#   slot (hello): the A/B slot the node runs `fw` from (docs/ota.md); absent on a node without slots.
#   log: console lines (firmware/console.py); the node cuts each to 160 characters.
#   ota, ota_state: updates (docs/ota.md), controller -> node chunks of a bundle, node -> controller progress.
#   lease: the controller's lease (docs/placement.md, fencing), published about once a second.
#   input: an input of a `topic` workload (firmware/source_topic.py), on PREFIX/wl/WORKLOAD/input:
#     seq is the stream position, data the model's int8 input in base64 (MAX_INPUT_BYTES at most).
# The ctrl-level kinds only the controller and operators speak (op_req, op_reply, audit) are added
# on the host, by controller/opwire.py (extend()): no board ever receives them.
TABLE = """
hello 2048 1 - v:int node:str board:str runtime:str fw:str boot:int caps:obj slot:str?
status 512 1 r v:int node:str state:str boot:int
hb 2048 0 - v:int node:str boot:int seq:int up:int cpu:num mem_free:int mem_total:int power:obj temp:num|null wl:list outbox:obj? fenced:bool? state:str? mem_low:int?
result 1024 1 - v:int node:str boot:int seq:int wl:name up:int label:int score:num us:int truth:int? in:int? top:lists? out:nums?
event 2048 1 - v:int node:str boot:int up:int level:str kind:str msg:str data:obj?
log 2048 0 - v:int node:str boot:int up:int lines:strs dropped:int?
reply 4096 1 - v:int id:str ok:bool data:obj? error:str?
assign 4096 1 r v:int epoch:int wl:list
ack 256 1 - v:int boot:int seq:int
cmd 2048 1 - v:int id:str op:str args:obj?
ctrl_status 512 1 r v:int state:str ctrl:str
ota 3072 1 - v:int id:str op:str off:int? size:int? ver:str? window_ms:int? data:str?
ota_state 1024 1 - v:int node:str boot:int id:str state:str off:int ver:str? err:str? chunk:int?
lease 256 0 - v:int ctrl:str seq:int
input 4096 1 - v:int seq:int data:str truth:int?
"""

# Values a field may take, where the protocol fixes them: a line each, "kind.field value value ...".
ENUMS = """
hello.runtime micropython cpython
status.state online offline degraded safe
hb.state online degraded safe
event.level debug info warn error
ctrl_status.state online offline
ota.op begin chunk abort rollback
ota_state.state receiving idle current switching rejected abandoned confirmed reverted rolledback
"""

WORKLOAD_SCHEMA = "id:name model:name rate:num input:obj"
# seen, dropped: a topic workload's highest input sequence number received, and inputs dropped.
WORKLOAD_STATE_SCHEMA = "id:name state:str n:int err:str|null restarts:int? seen:int? dropped:int?"
# The input source kinds an assignment may name (firmware/sources.py).
INPUT_KINDS = ("samples", "sensor", "topic", "camera")
# The largest model input a topic workload takes: its base64 fits the input message's limit.
MAX_INPUT_BYTES = 3000
POWER_SCHEMA = "src:str pct:num|null mw:num|null"
POWER_SOURCES = ("mains", "battery", "solar")
# Limits every decoded message is held to (docs/protocol.md, "Validation limits"): integers fit
# a signed 64-bit SQLite column, numbers are finite, names are plain (valid_node_id), JSON nests
# at most 8 deep.
# Written inline where they are checked: on a board every module-level name costs heap.

NODE_TOPIC_KINDS = ("hello", "status", "hb", "result", "event", "log", "reply", "assign", "ack", "cmd", "ota",
                    "ota_state")
# Who publishes each node-topic kind: the broker's ACL (controller/security/acl.py) lets a node
# publish only the first set on its own topics, and read only the second.
NODE_SENDS = ("hello", "status", "hb", "result", "event", "log", "reply", "ota_state")
CONTROLLER_SENDS = ("assign", "ack", "cmd", "ota")


def _line(table, key):
    # The rest of `table`'s line that starts with `key` and a space, or None.
    at = table.find("\n" + key + " ")
    if at < 0:
        return None
    at += len(key) + 2
    return table[at:table.find("\n", at)]


def _row(kind):
    # [limit, qos, retain, fields] of a kind, or None for a kind the protocol does not have.
    line = _line(TABLE, kind)
    return None if line is None else line.split(" ", 3)


def limit(kind):
    """A kind's size limit in bytes; None for a kind the protocol does not have."""
    row = _row(kind)
    return None if row is None else int(row[0])


def fields(kind):
    """A kind's schema: its "field:type" items, space-separated."""
    return _row(kind)[3]


def delivery(kind):
    """(QoS, retained) a kind is published with, as the topic table of docs/protocol.md fixes them."""
    row = _row(kind)
    return int(row[1]), row[2] == "r"


def kinds():
    """Every message kind the table has."""
    return [line.split(" ", 1)[0] for line in TABLE.split("\n") if line]


def extend(rows, enums=""):
    """Add kinds to the table (and values to ENUMS), in the table's own form: the host's
    operator kinds (controller/opwire.py)."""
    global TABLE, ENUMS
    for line in rows.strip().split("\n"):
        if _row(line.split(" ", 1)[0]) is None:   # a second import adds nothing
            TABLE += line + "\n"
    for line in enums.strip().split("\n") if enums else ():
        if _line(ENUMS, line.split(" ", 1)[0]) is None:
            ENUMS += line + "\n"


_NODE_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"


def valid_node_id(node):
    """A node id, and the rule for every name on the wire ("name" in a schema: model names,
    workload ids): these end up in topics, file paths and log lines."""
    if not isinstance(node, str) or not 1 <= len(node) <= 32:
        return False
    for ch in node:
        if ch not in _NODE_ID_CHARS:
            return False
    return True


def node_topic(prefix, node, kind):
    return prefix + "/node/" + node + "/" + kind


def ctrl_topic(prefix):
    return prefix + "/ctrl/status"


def lease_topic(prefix):
    return prefix + "/ctrl/lease"


def input_topic(prefix, workload):
    """Where a `topic` workload's inputs are published."""
    return prefix + "/wl/" + workload + "/input"


def parse_topic(prefix, topic):
    """Split a topic into (node, kind); ("", "ctrl_status") for the controller's status topic,
    ("", "lease") for its lease (the operator topics: controller/opwire.py); (workload, "input")
    for a workload's input topic."""
    if topic == ctrl_topic(prefix):
        return "", "ctrl_status"
    if topic == lease_topic(prefix):
        return "", "lease"
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == prefix and parts[1] == "wl" and parts[3] == "input":
        if not valid_node_id(parts[2]):
            raise ProtocolError("bad workload id in topic: %s" % topic, field="wl")
        return parts[2], "input"
    if len(parts) != 4 or parts[0] != prefix or parts[1] != "node":
        raise ProtocolError("not an edgefleet topic: %s" % topic)
    node, kind = parts[2], parts[3]
    if not valid_node_id(node):
        raise ProtocolError("bad node id in topic: %s" % topic, field="node")
    if kind not in NODE_TOPIC_KINDS:
        raise ProtocolError("unknown message kind in topic: %s" % topic, kind=kind)
    return node, kind


def _type_ok(value, code):
    if code == "int":
        # Fits int64 (SQLite's integer) exactly when shifting out 63 bits leaves only the sign.
        return isinstance(value, int) and not isinstance(value, bool) and -1 <= value >> 63 <= 0
    if code == "num":
        # inf - inf and nan - nan are both nan: one test rejects all three non-finite floats.
        return _type_ok(value, "int") or isinstance(value, float) and value - value == 0.0
    if code == "str":
        return isinstance(value, str)
    if code == "bool":
        return isinstance(value, bool)
    if code == "obj":
        return isinstance(value, dict)
    if code == "list":
        return isinstance(value, list)
    if code == "name":
        return valid_node_id(value)
    if code[-1] == "s" and isinstance(value, list):   # names, strs: a list of those
        for item in value:
            if not _type_ok(item, code[:-1]):
                return False
        return True
    return False


def _check_fields(kind, msg, schema, where=""):
    if not isinstance(msg, dict):
        raise ProtocolError("%s: '%s' must be an object" % (kind, where[:-1] or "payload"), kind=kind,
                            field=where[:-1] or None)
    for item in schema.split():
        name, _, code = item.partition(":")
        optional = code.endswith("?")
        code = code.rstrip("?")
        nullable = code.endswith("|null")
        if nullable:
            code = code[:-5]
        if name not in msg:
            if optional:
                continue
            raise ProtocolError("%s: missing field '%s%s'" % (kind, where, name), kind=kind, field=where + name)
        value = msg[name]
        if value is None and (nullable or optional):
            continue
        if not _type_ok(value, code):
            raise ProtocolError(
                "%s: field '%s%s' must be %s, got %s" % (kind, where, name, code, type(value).__name__),
                kind=kind, field=where + name,
            )


def validate(kind, msg):
    """Check a decoded message against its schema; return it, or raise ProtocolError."""
    row = _row(kind)
    if row is None:
        raise ProtocolError("unknown message kind '%s'" % kind, kind=kind)
    version = msg.get("v") if isinstance(msg, dict) else VERSION   # a non-object fails just below
    if version != VERSION:
        raise ProtocolError("%s: protocol version %r, not %d" % (kind, version, VERSION),
                            kind=kind, field="v")
    _check_fields(kind, msg, row[3])
    at = ENUMS.find("\n" + kind + ".")
    while at >= 0:
        line = ENUMS[at + 1:ENUMS.find("\n", at + 1)]
        field, _, values = line[len(kind) + 1:].partition(" ")
        if field in msg and msg[field] not in values.split():
            raise ProtocolError("%s: field '%s' is %r, not one of: %s" % (kind, field, msg[field], values),
                                kind=kind, field=field)
        at = ENUMS.find("\n" + kind + ".", at + 1)
    if "node" in msg and not valid_node_id(msg["node"]):
        raise ProtocolError("%s: bad node id %r" % (kind, msg["node"]), kind=kind, field="node")
    if kind == "assign":
        _validate_assign(msg)
    elif kind == "hb":
        _validate_hb(msg)
    elif kind == "hello":
        # Placement reads these (controller/fleet/placement.py).
        _check_fields(kind, msg["caps"], "heap:int? flash:int? backends:strs? models:names? labels:strs? tls:bool? code:str? "
                      "sensors:strs? camera:bool? word:int?",
                      "caps.")
    if kind in ("result", "ack", "input") and msg["seq"] < (1 if kind == "result" else 0):
        raise ProtocolError("%s: field 'seq' out of range: %d" % (kind, msg["seq"]), kind=kind, field="seq")
    return msg


def _validate_assign(msg):
    seen = []
    for i, spec in enumerate(msg["wl"]):
        where = "wl[%d]." % i
        _check_fields("assign", spec, WORKLOAD_SCHEMA, where)
        if spec["rate"] <= 0:
            raise ProtocolError("assign: '%srate' must be > 0" % where, kind="assign", field=where + "rate")
        if spec["input"].get("kind") not in INPUT_KINDS:
            raise ProtocolError("assign: unknown '%sinput.kind' %r" % (where, spec["input"].get("kind")),
                                kind="assign", field=where + "input.kind")
        if spec["id"] in seen:
            raise ProtocolError("assign: workload %r twice" % spec["id"], kind="assign", field=where + "id")
        seen.append(spec["id"])


def _validate_hb(msg):
    _check_fields("hb", msg["power"], POWER_SCHEMA, "power.")
    if msg["power"]["src"] not in POWER_SOURCES:
        raise ProtocolError("hb: unknown 'power.src' %r" % msg["power"]["src"], kind="hb", field="power.src")
    for i, state in enumerate(msg["wl"]):
        _check_fields("hb", state, WORKLOAD_STATE_SCHEMA, "wl[%d]." % i)


def decode(kind, payload):
    """Parse and validate a payload (bytes or str) of the given kind."""
    most = limit(kind) or 0
    if len(payload) > most:
        raise ProtocolError("%s: %d bytes, over %d" % (kind, len(payload), most),
                            kind=kind, field="")
    # bytes, as the MQTT reader hands them over, are scanned and parsed in place: no copy.
    data = payload if isinstance(payload, bytes) else payload.encode() if isinstance(payload, str) else bytes(payload)
    # Nesting is bounded before parsing: CPython's and MicroPython's JSON parsers recurse once per
    # level. Brackets inside strings (after an odd run of backslashes: escaped quotes) are text.
    depth = 0
    quoted = False
    escaped = False
    for c in data:
        if escaped:
            escaped = False
        elif quoted:
            escaped = c == 92
            quoted = c != 34
        elif c == 34:
            quoted = True
        elif c == 91 or c == 123:
            depth += 1
            if depth > 8:
                raise ProtocolError("%s: nested over 8 deep" % kind, kind=kind)
        elif c == 93 or c == 125:
            depth -= 1
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeError) as e:
        raise ProtocolError("%s: payload is not valid JSON (%s)" % (kind, e), kind=kind)
    return validate(kind, msg)


def encode(kind, msg):
    """Validate and serialize an outgoing message; a bug that builds a bad message fails here."""
    validate(kind, msg)
    data = json.dumps(msg)
    most = limit(kind)
    if len(data) > most:
        raise ProtocolError("%s: %d bytes, over %d" % (kind, len(data), most), kind=kind)
    return data
