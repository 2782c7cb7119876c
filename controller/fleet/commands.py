"""Operator commands for the running controller, queued in the registry it already owns.

`edgefleet move`, `drain` and `apply` run in another process than the controller. They insert a
row into the registry's `commands` table; the controller takes pending rows on every tick (about
once a second), acts, and writes the outcome back; the CLI waits for that outcome and prints it.
The registry is the one thing both sides already share (SQLite in WAL mode: one writer at a time,
readers never blocked), so no second channel, port or credential is needed, and a command given
while the controller is down runs when it comes back.
"""
import json
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    op TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    answer TEXT
);
"""
OPS = ("move", "drain", "undrain", "apply")


def ensure(db):
    db.executescript(SCHEMA)


def submit(db, op, args, now=None):
    if op not in OPS:
        raise ValueError("unknown operator command %r" % op)
    ensure(db)
    cur = db.execute("INSERT INTO commands (ts, op, args) VALUES (?,?,?)", (now or time.time(), op, json.dumps(args)))
    db.commit()
    return cur.lastrowid


def pending(db):
    return [(r[0], r[1], json.loads(r[2])) for r in
            db.execute("SELECT id, op, args FROM commands WHERE state='pending' ORDER BY id")]


def finish(db, command_id, ok, answer):
    db.execute("UPDATE commands SET state=?, answer=? WHERE id=?", ("done" if ok else "failed", answer, command_id))


def outcome(db, command_id):
    """(state, answer) of a command."""
    r = db.execute("SELECT state, answer FROM commands WHERE id=?", (command_id,)).fetchone()
    return (r[0], r[1]) if r else (None, None)


def wait(db, command_id, timeout):
    """Wait for the controller to act; returns (state, answer), state 'pending' on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        state, answer = outcome(db, command_id)
        if state != "pending" or time.monotonic() >= deadline:
            return state, answer
        time.sleep(0.2)
