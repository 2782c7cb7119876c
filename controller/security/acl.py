"""The broker's authorisation rules, as mosquitto's dynamic-security plugin reads them.

One role per node, naming that node's topics literally (mosquitto 2.0's plugin has no %c
patterns): a node may publish only the node->controller kinds on its own topics, read only the
controller->node kinds on its own topics and the controller's status and lease, and the inputs of
`topic` workloads (PREFIX/wl/+/input: any node may be given any workload) - not operator
requests, their replies or the audit log. The controller publishes the controller->node kinds,
the ctrl topics and the replies to operator requests; operators (the CLI, or a user's program
feeding a `topic` workload) publish `cmd`, `ota`, operator requests and workload inputs only -
assignments, acks and replies stay the controller's. Both read every
node topic, which is how `edgefleet logs NODE --follow` reads a node's console lines (its `log`
topic, which only that node may publish). Every node login is
pinned to its node id as MQTT client id, so nobody can knock a node off the broker by taking
its client id with other credentials.
"""
import base64
import hashlib
import os

from ...firmware.protocol import CONTROLLER_SENDS, NODE_SENDS, ctrl_topic, input_topic, lease_topic, node_topic
from ..opwire import audit_topic, reply_topic, request_topic
from .principals import ADMIN, CONTROLLER, NODE, OPERATOR

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
# mosquitto's own default for PBKDF2-SHA512: the broker checks one hash per CONNECT.
HASH_ITERATIONS = 101


def _acl(kind, topic):
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def role_name(principal):
    return "ef-node-" + principal.name if principal.role == NODE else "ef-" + principal.role


def role_acls(principal, prefix):
    if principal.role == NODE:
        acls = [_acl("publishClientSend", node_topic(prefix, principal.name, k)) for k in NODE_SENDS]
        acls += [_acl("subscribePattern", node_topic(prefix, principal.name, k)) for k in CONTROLLER_SENDS]
        # Any node may be given any workload, so it may read every workload's inputs (and
        # publish none: a node cannot feed another workload forged inputs).
        return acls + [_acl("subscribePattern", ctrl_topic(prefix)), _acl("subscribePattern", lease_topic(prefix)),
                       _acl("subscribePattern", input_topic(prefix, "+"))]
    if principal.role == CONTROLLER:
        acls = [_acl("publishClientSend", node_topic(prefix, "+", k)) for k in CONTROLLER_SENDS]
        acls += [_acl("publishClientSend", t) for t in (ctrl_topic(prefix), lease_topic(prefix), audit_topic(prefix),
                                                        reply_topic(prefix, "+"))]
        return acls + [_acl("subscribePattern", prefix + "/node/+/+"), _acl("subscribePattern", prefix + "/ctrl/#")]
    if principal.role == OPERATOR:
        acls = [_acl("publishClientSend", node_topic(prefix, "+", k)) for k in ("cmd", "ota")]
        acls.append(_acl("publishClientSend", request_topic(prefix)))
        acls.append(_acl("publishClientSend", input_topic(prefix, "+")))   # a topic workload's inputs
        return acls + [_acl("subscribePattern", prefix + "/node/+/+"), _acl("subscribePattern", prefix + "/ctrl/#")]
    if principal.role == ADMIN:
        return [_acl("publishClientSend", "$CONTROL/dynamic-security/#"),
                _acl("publishClientReceive", "$CONTROL/dynamic-security/#"),
                _acl("subscribePattern", "$CONTROL/dynamic-security/#")]
    return []


def hashed_client(principal):
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", principal.password.encode(), salt, HASH_ITERATIONS, 64)
    client = {"username": principal.name, "password": base64.b64encode(digest).decode(),
              "salt": base64.b64encode(salt).decode(), "iterations": HASH_ITERATIONS,
              "roles": [{"rolename": role_name(principal)}]}
    if principal.client_id:
        client["clientid"] = principal.client_id
    return client


def dynsec_config(principals, prefix):
    """The plugin's JSON document for `principals`: deny by default, one role per principal."""
    roles = {}
    for p in principals:
        roles.setdefault(role_name(p), {"rolename": role_name(p), "acls": role_acls(p, prefix)})
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
        "clients": [hashed_client(p) for p in principals],
        "groups": [],
        "roles": list(roles.values()),
    }


def sync_commands(before, after, prefix):
    """Commands for the plugin's control topic that turn the principal set `before` into
    `after` (dicts name -> Principal): new logins, changed passwords, revoked ones."""
    commands = []
    for name, p in sorted(after.items()):
        old = before.get(name)
        if old is None:
            commands.append({"command": "createRole", "rolename": role_name(p), "acls": role_acls(p, prefix)})
            client = {"command": "createClient", "username": p.name, "password": p.password,
                      "roles": [{"rolename": role_name(p)}]}
            if p.client_id:
                client["clientid"] = p.client_id
            commands.append(client)
        elif old.password != p.password:
            commands.append({"command": "setClientPassword", "username": p.name, "password": p.password})
    for name, p in sorted(before.items()):
        if name not in after:
            commands.append({"command": "deleteClient", "username": p.name})
            if p.role == NODE:
                commands.append({"command": "deleteRole", "rolename": role_name(p)})
    return commands
