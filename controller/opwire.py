"""The ctrl-level kinds only the controller and operators speak (docs/protocol.md, "Operator
requests"): operator requests (`op_req`), the controller's answers (`op_reply`) and its audit
feed (`audit`).

They are part of the one wire protocol and are checked by firmware/protocol.py's own code, but
their schemas live here, on the host: no board ever receives them, and on a microcontroller
every schema, enum and topic function protocol.py holds is heap (the ESP32's runtime runs
within about a kilobyte of its budget). Importing this module adds them to protocol's table (protocol.extend),
so protocol.encode/decode/validate handle them like any other kind.
"""
from edgefleet.firmware import protocol

SCHEMAS = {
    # A reply carries one part of the answer's JSON text; a big answer (a large fleet's status)
    # comes in up to 512 parts (controller/fleet/operator.py: reply_effects).
    "op_req": (65536, "v:int id:name op:str args:obj"),
    "op_reply": (16384, "v:int id:name ok:bool part:int parts:int data:str? error:str?"),
    # `ev` is one audit-log event as `events` shows it (ts node level kind msg data).
    "audit": (4096, "v:int ev:obj"),
}
ENUMS = {"op_req.op": "status events logs export plan apply move drain undrain"}
DELIVERY = {"op_req": (1, False), "op_reply": (1, False), "audit": (1, False)}

protocol.extend("".join("%s %d %d %s %s\n" % (kind, limit, DELIVERY[kind][0], "r" if DELIVERY[kind][1] else "-", fields)
                         for kind, (limit, fields) in SCHEMAS.items()),
                "".join("%s %s\n" % item for item in ENUMS.items()))


def request_topic(prefix):
    return prefix + "/ctrl/op/req"


def reply_topic(prefix, request_id):
    """Where the answer to request `request_id` goes: the asker subscribes before it asks."""
    return prefix + "/ctrl/op/reply/" + request_id


def audit_topic(prefix):
    return prefix + "/ctrl/audit"


def parse_topic(prefix, topic):
    """protocol.parse_topic, plus ("", KIND) for the operator topics."""
    if topic == request_topic(prefix):
        return "", "op_req"
    if topic == audit_topic(prefix):
        return "", "audit"
    replies = reply_topic(prefix, "")
    if topic.startswith(replies) and protocol.valid_node_id(topic[len(replies):]):
        return "", "op_reply"
    return protocol.parse_topic(prefix, topic)
