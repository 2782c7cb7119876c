# The last few crashes and hangs of the node's children, kept on flash so that one that happens
# offline, or just before a reset, still reaches the controller: each record is published once a
# link is up, and stays on flash (marked sent) for the `crashes` command and `edgefleet logs`.
# Loaded only when there is a crash to write or to send.
from . import console, flashfile

FILE = "/crashes.json"
KEEP = 8
# Longest exception text kept per record: a board's flash and an event's size are small.
ERROR_CHARS = 160


def read(data_dir):
    records = flashfile.read(data_dir + FILE, [])
    return records if isinstance(records, list) else []


def highest_boot(data_dir, recovered, boot_record):
    """The highest boot named by the outbox's results (recovered: boot -> seq), the crash records
    and the boot record (firmware/bootguard.py): a lost boot counter restarts above it."""
    top = max(list(recovered) + [0])
    for r in read(data_dir) + [boot_record]:
        boot = r.get("boot") if isinstance(r, dict) else None
        if isinstance(boot, int) and boot > top:
            top = boot
    return top


def add(data_dir, boot, uptime_ms, child, how, error, sent):
    record = {"boot": boot, "up": uptime_ms, "child": child, "how": how, "err": (error or "")[:ERROR_CHARS],
              "sent": sent}
    _save(data_dir, (read(data_dir) + [record])[-KEEP:])
    return record


def record(node, child, how, error):
    """A child of `node` crashed or hung: keep the record, and report it now if the link is up.
    Returns whether it was reported (else publish() sends it once a link is up)."""
    console.say("edgefleet-node: %s %s: %s; restarting it" % (child.id, "hung" if how == "hang" else "crashed", error))
    online = node.online()
    r = add(node.data_dir, node.boot, node.uptime_ms(), child.id, how, error, online)
    if online:
        _report(node, r)
    return online


def publish(node):
    """Report the records not yet published, and mark them sent on flash."""
    records = read(node.data_dir)
    unsent = [r for r in records if not r.get("sent")]
    if unsent:
        for r in unsent:
            r["sent"] = True
            _report(node, r)
        _save(node.data_dir, records)


def _report(node, r):
    node.event("error", r["how"], "%s: %s" % (r["child"], r["err"]),
               {"child": r["child"], "how": r["how"], "boot": r["boot"], "up": r["up"]})


def _save(data_dir, records):
    try:
        flashfile.write(data_dir + FILE, records)
    except OSError:
        pass  # a full flash must not turn a crash report into another crash
