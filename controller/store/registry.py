"""The controller's registry: nodes, workloads, placements, results and events, in SQLite.

One Registry object belongs to one thread (SQLite connections are not shared across threads);
other processes, such as `edgefleet status`, open their own read connection on the same file.
WAL mode lets them read while the controller writes.
"""
import json
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    board TEXT NOT NULL,
    runtime TEXT NOT NULL,
    fw TEXT NOT NULL DEFAULT '',
    boot INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'unknown',
    caps TEXT NOT NULL DEFAULT '{}',
    telemetry TEXT NOT NULL DEFAULT '{}',
    last_seen REAL NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS workloads (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    rate REAL NOT NULL,
    input TEXT NOT NULL,
    replicas INTEGER NOT NULL DEFAULT 1,
    constraints TEXT NOT NULL DEFAULT '{}',
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS placements (
    workload TEXT NOT NULL,
    node TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (workload, node)
);
CREATE TABLE IF NOT EXISTS results (
    node TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    workload TEXT NOT NULL,
    label INTEGER NOT NULL,
    truth INTEGER,
    score REAL NOT NULL,
    us INTEGER NOT NULL,
    up INTEGER NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (node, boot, seq)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    node TEXT NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    msg TEXT NOT NULL,
    data TEXT
);
"""


# Workload fields kept together in the workloads table's `extra` column.
WORKLOAD_EXTRA = ("resources", "priority")


def default_path():
    home = os.environ.get("EDGEFLEET_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state", "edgefleet")
    return os.path.join(home, "fleet.db")


def _node_row(row):
    node = dict(row)
    node["caps"] = json.loads(node["caps"])
    node["telemetry"] = json.loads(node["telemetry"])
    return node


class Registry:
    def __init__(self, path=None):
        self.path = path or default_path()
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10)
        self.db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        # Registries written before workloads had resources and a priority.
        columns = [r[1] for r in self.db.execute("PRAGMA table_info(workloads)")]
        if "extra" not in columns:
            self.db.execute("ALTER TABLE workloads ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")
        self.db.commit()

    def close(self):
        self.db.close()

    def commit(self):
        self.db.commit()

    # -- nodes ------------------------------------------------------------------------------

    def upsert_node(self, node_id, board, runtime, fw, boot, caps, state="online", now=None):
        self.db.execute(
            "INSERT INTO nodes (id, board, runtime, fw, boot, caps, state, last_seen) VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET board=excluded.board, runtime=excluded.runtime, fw=excluded.fw, "
            "boot=excluded.boot, caps=excluded.caps, state=excluded.state, last_seen=excluded.last_seen",
            (node_id, board, runtime, fw, boot, json.dumps(caps), state, now or time.time()),
        )

    def set_node_state(self, node_id, state, now=None):
        cur = self.db.execute("UPDATE nodes SET state=?, last_seen=COALESCE(?, last_seen) WHERE id=?",
                              (state, now, node_id))
        return cur.rowcount > 0

    def record_heartbeat(self, node_id, telemetry, now=None):
        self.db.execute("UPDATE nodes SET telemetry=?, last_seen=? WHERE id=?",
                        (json.dumps(telemetry), now or time.time(), node_id))

    def set_epoch(self, node_id, epoch):
        self.db.execute("UPDATE nodes SET epoch=? WHERE id=?", (epoch, node_id))

    def nodes(self):
        return [_node_row(row) for row in self.db.execute("SELECT * FROM nodes ORDER BY id")]

    def node(self, node_id):
        row = self.db.execute("SELECT * FROM nodes WHERE id=?", (node_id,)).fetchone()
        return _node_row(row) if row is not None else None

    # -- workloads and placements -------------------------------------------------------------

    def put_workload(self, wl):
        self.db.execute(
            "INSERT INTO workloads (id, model, rate, input, replicas, constraints, extra) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(id) DO UPDATE SET model=excluded.model, rate=excluded.rate, input=excluded.input, "
            "replicas=excluded.replicas, constraints=excluded.constraints, extra=excluded.extra",
            (wl["id"], wl["model"], wl["rate"], json.dumps(wl.get("input", {"kind": "samples"})),
             wl.get("replicas", 1), json.dumps(wl.get("constraints", {})),
             json.dumps({k: wl[k] for k in WORKLOAD_EXTRA if k in wl})),
        )

    def remove_workload(self, workload_id):
        self.db.execute("DELETE FROM workloads WHERE id=?", (workload_id,))
        self.db.execute("DELETE FROM placements WHERE workload=?", (workload_id,))

    def workloads(self):
        out = []
        for row in self.db.execute("SELECT * FROM workloads ORDER BY id"):
            wl = dict(row)
            wl["input"] = json.loads(wl["input"])
            wl["constraints"] = json.loads(wl["constraints"])
            wl.update(json.loads(wl.pop("extra", None) or "{}"))
            out.append(wl)
        return out

    def placements(self):
        return [(r["workload"], r["node"]) for r in self.db.execute("SELECT workload, node FROM placements ORDER BY workload, node")]

    def place(self, workload_id, node_id, now=None):
        self.db.execute("INSERT OR IGNORE INTO placements (workload, node, since) VALUES (?,?,?)",
                        (workload_id, node_id, now or time.time()))

    def unplace(self, workload_id, node_id):
        self.db.execute("DELETE FROM placements WHERE workload=? AND node=?", (workload_id, node_id))

    # -- results and events -------------------------------------------------------------------

    def store_result(self, msg, now=None):
        """Store a result once; returns False when (node, boot, seq) was stored already."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO results (node, boot, seq, workload, label, truth, score, us, up, received) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (msg["node"], msg["boot"], msg["seq"], msg["wl"], msg["label"], msg.get("truth"), msg["score"],
             msg["us"], msg["up"], now or time.time()),
        )
        return cur.rowcount == 1

    def contiguous_results(self, node_id, boot):
        """The highest seq such that results 1..seq of (node, boot) are all stored."""
        row = self.db.execute(
            "SELECT MIN(seq) FROM results r WHERE node=? AND boot=? AND NOT EXISTS "
            "(SELECT 1 FROM results n WHERE n.node=r.node AND n.boot=r.boot AND n.seq=r.seq+1)",
            (node_id, boot)).fetchone()
        first = self.db.execute("SELECT 1 FROM results WHERE node=? AND boot=? AND seq=1", (node_id, boot)).fetchone()
        if row[0] is None or first is None:
            return 0
        return row[0]

    def result_counts(self):
        """{node: results stored}."""
        return {r[0]: r[1] for r in self.db.execute("SELECT node, COUNT(*) FROM results GROUP BY node")}

    def result_stats(self):
        """Per workload: results, accuracy where truth is known, mean inference time."""
        out = {}
        for r in self.db.execute(
            "SELECT workload, COUNT(*), SUM(CASE WHEN truth IS NOT NULL AND truth = label THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN truth IS NOT NULL THEN 1 ELSE 0 END), AVG(us) FROM results GROUP BY workload"
        ):
            out[r[0]] = {"results": r[1], "accuracy": (r[2] / r[3]) if r[3] else None, "mean_us": r[4]}
        return out

    def add_event(self, node_id, level, kind, msg, data=None, now=None):
        self.db.execute("INSERT INTO events (ts, node, level, kind, msg, data) VALUES (?,?,?,?,?,?)",
                        (now or time.time(), node_id, level, kind, msg, json.dumps(data) if data is not None else None))

    def events(self, node_id=None, limit=50, kinds=None):
        query = "SELECT * FROM events"
        where, args = [], ()
        if node_id:
            where.append("node=?")
            args += (node_id,)
        if kinds:
            where.append("kind IN (%s)" % ",".join("?" * len(kinds)))
            args += tuple(kinds)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        rows = [dict(r) for r in self.db.execute(query, args + (limit,))]
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else None
        rows.reverse()
        return rows
