"""The registry in PostgreSQL: for fleets that outgrow one controller host (docs/scale.md).
`--db postgresql://user@host:port/dbname` chooses it; controller/store/base.py says what a
backend does.

The same schema versions as the SQLite backend, in PostgreSQL's types: timestamps are double
precision (REAL is 4 bytes here), counters that a long-lived fleet can push past 2**31 are bigint.
The version lives in a one-row table, `edgefleet_schema`. Several controller replicas may open
the same database at once: migrating happens under a transaction-scoped advisory lock, so one
of them migrates and the others find the work done.
"""
import json
import logging
import time

from ..errors import StoreError
from ..extras import require
from .base import SCHEMA_VERSION, WORKLOAD_EXTRA, Registry, result_outputs, stored_result_row

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key under which a registry is migrated (any constant both sides agree on;
# these are the bytes "efmigr").
MIGRATION_LOCK = 0x6566_6D69_6772

SCHEMA_V1 = [
    """CREATE TABLE IF NOT EXISTS nodes (
        id TEXT PRIMARY KEY,
        board TEXT NOT NULL,
        runtime TEXT NOT NULL,
        fw TEXT NOT NULL DEFAULT '',
        boot BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'unknown',
        caps TEXT NOT NULL DEFAULT '{}',
        telemetry TEXT NOT NULL DEFAULT '{}',
        last_seen DOUBLE PRECISION NOT NULL DEFAULT 0,
        epoch BIGINT NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS workloads (
        id TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        rate DOUBLE PRECISION NOT NULL,
        input TEXT NOT NULL,
        replicas INTEGER NOT NULL DEFAULT 1,
        constraints TEXT NOT NULL DEFAULT '{}',
        extra TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE IF NOT EXISTS placements (
        workload TEXT NOT NULL,
        node TEXT NOT NULL,
        since DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (workload, node))""",
    # (node, boot, seq) is the key that makes a result stored once whichever replica takes it.
    """CREATE TABLE IF NOT EXISTS results (
        node TEXT NOT NULL,
        boot BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        workload TEXT NOT NULL,
        label INTEGER NOT NULL,
        truth INTEGER,
        score DOUBLE PRECISION NOT NULL,
        us BIGINT NOT NULL,
        up BIGINT NOT NULL,
        received DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (node, boot, seq))""",
    """CREATE TABLE IF NOT EXISTS events (
        id BIGSERIAL PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        node TEXT NOT NULL,
        level TEXT NOT NULL,
        kind TEXT NOT NULL,
        msg TEXT NOT NULL,
        data TEXT)""",
    """CREATE TABLE IF NOT EXISTS streams (
        workload TEXT NOT NULL,
        lane INTEGER NOT NULL,
        node TEXT NOT NULL,
        start BIGINT NOT NULL,
        until BIGINT,
        PRIMARY KEY (workload, lane, start))""",
    """CREATE TABLE IF NOT EXISTS accepted (
        workload TEXT NOT NULL,
        lane INTEGER NOT NULL,
        pos BIGINT NOT NULL,
        node TEXT NOT NULL,
        boot BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (workload, lane, pos))""",
]

SCHEMA_V2 = [
    """CREATE TABLE IF NOT EXISTS resume (
        node TEXT NOT NULL,
        workload TEXT NOT NULL,
        pos BIGINT NOT NULL,
        PRIMARY KEY (node, workload))""",
    """CREATE TABLE IF NOT EXISTS moves (
        workload TEXT NOT NULL,
        lane INTEGER NOT NULL,
        state TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (workload, lane))""",
    "CREATE TABLE IF NOT EXISTS drains (node TEXT PRIMARY KEY)",
]

SCHEMA_V3 = ["ALTER TABLE nodes ADD COLUMN IF NOT EXISTS slot TEXT"]

# Telemetry history for the dashboard's plots (controller/dashboard/history.py), and results by
# workload and arrival (a workload's page reads its last hour).
SCHEMA_V4 = [
    """CREATE TABLE IF NOT EXISTS samples (
        node TEXT NOT NULL,
        res INTEGER NOT NULL,
        ts BIGINT NOT NULL,
        cpu DOUBLE PRECISION,
        mem_free BIGINT,
        battery DOUBLE PRECISION,
        rps DOUBLE PRECISION,
        PRIMARY KEY (node, res, ts))""",
    "CREATE INDEX IF NOT EXISTS results_by_workload ON results (workload, received)",
]

# Retention (controller/fleet/retention.py): oldest first, a result's stream position from it,
# the floor each pruned (node, boot) leaves.
SCHEMA_V5 = [
    "CREATE INDEX IF NOT EXISTS results_received ON results (received)",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    "CREATE INDEX IF NOT EXISTS accepted_result ON accepted (node, boot, seq)",
    "CREATE INDEX IF NOT EXISTS streams_node ON streams (workload, node)",
    """CREATE TABLE IF NOT EXISTS result_floors (
        node TEXT NOT NULL,
        boot BIGINT NOT NULL,
        through BIGINT NOT NULL,
        PRIMARY KEY (node, boot))""",
    # The leadership lease of controller replicas (controller/fleet/leadership.py).
    """CREATE TABLE IF NOT EXISTS leadership (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT,
        token BIGINT NOT NULL,
        expires DOUBLE PRECISION NOT NULL)""",
    "INSERT INTO leadership (id, holder, token, expires) VALUES (1, NULL, 0, 0) ON CONFLICT DO NOTHING",
]

# The database server's clock, in seconds: the one all replicas' leases are measured on.
DB_NOW = "extract(epoch from clock_timestamp())"

# version -> the statements that bring a registry of version-1 to it (the same steps as
# sqlite.MIGRATIONS, in this engine's DDL; a new table is one more entry in each).
# What a result says beyond its label and score (the k best classes, every value), as JSON.
SCHEMA_V6 = ["ALTER TABLE results ADD COLUMN IF NOT EXISTS outputs TEXT"]

MIGRATIONS = {1: SCHEMA_V1, 2: SCHEMA_V2, 3: SCHEMA_V3, 4: SCHEMA_V4, 5: SCHEMA_V5, 6: SCHEMA_V6}

# What retention orders each prunable table by.
ARRIVAL = {"results": "received", "events": "ts"}


def is_postgres_url(location):
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redacted(url):
    """The URL without its password, for messages and `location`."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return scheme + sep + userinfo + at + hostpart


def _node_row(row):
    node = dict(row)
    node["caps"] = json.loads(node["caps"])
    node["telemetry"] = json.loads(node["telemetry"])
    return node


class PostgresRegistry(Registry):
    def __init__(self, url, readonly=False, connect_timeout=5, idle_in_transaction_s=None):
        # idle_in_transaction_s: how long PostgreSQL lets this session sit idle inside a
        # transaction before it ends the session, freeing the rows it locked (controller replicas,
        # controller/fleet/service.py: a replica frozen mid-transaction would otherwise hold them
        # until it runs again). None: no limit.
        self.url = url
        self.location = redacted(url)
        self.readonly = readonly
        self.connect_timeout = connect_timeout
        self.idle_in_transaction_s = idle_in_transaction_s
        self.psycopg = require("psycopg", "a PostgreSQL registry")
        self.reconnects = 0
        self.db = self._connect(readonly=False)
        try:
            self._migrate()
            if readonly:
                self.db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                self.db.commit()
        except self.psycopg.Error as e:
            self.db.close()
            raise StoreError("the PostgreSQL registry at %s cannot be used: %s" % (self.location, _first_line(e)),
                             self.location) from None
        except StoreError:
            self.db.close()
            raise

    def _connect(self, readonly=None):
        from psycopg.rows import dict_row
        readonly = self.readonly if readonly is None else readonly
        try:
            db = self.psycopg.connect(self.url, connect_timeout=self.connect_timeout, row_factory=dict_row)
        except self.psycopg.ProgrammingError as e:   # a malformed URL (libpq's conninfo parser)
            raise StoreError("%s is not a PostgreSQL URL libpq accepts: %s" % (self.location, _first_line(e)),
                             self.location) from None
        except self.psycopg.OperationalError as e:
            raise StoreError("cannot reach the PostgreSQL registry at %s: %s" % (self.location, _first_line(e)),
                             self.location) from None
        try:
            # Only writers hold row locks; a reader (the CLI's --db) may take its time.
            if self.idle_in_transaction_s and not self.readonly:
                db.execute("SET idle_in_transaction_session_timeout = %d" % int(self.idle_in_transaction_s * 1000))
            if readonly:
                db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            db.commit()
        except self.psycopg.Error as e:
            db.close()
            raise StoreError("the PostgreSQL registry at %s cannot be used: %s" % (self.location, _first_line(e)),
                             self.location) from None
        return db

    def _live(self):
        """The connection, opened again when the server ended it (its idle-in-transaction limit
        after this process stood still, a restart, a dropped link): the transaction it held is
        lost, which the statement that failed on it already reported; what follows runs anew."""
        if self.db.closed or self.db.broken:
            try:
                self.db.close()
            finally:
                self.db = self._connect()
                self.reconnects += 1
                log.warning("reconnected to the PostgreSQL registry at %s", self.location)
        return self.db

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self):
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self.db.execute("CREATE TABLE IF NOT EXISTS edgefleet_schema (version INTEGER NOT NULL)")
            version = self.schema_version()
            if version is None:
                self.db.execute("INSERT INTO edgefleet_schema (version) VALUES (0)")
                version = 0
            if version > SCHEMA_VERSION:
                raise StoreError("the registry at %s has schema version %d; this edgefleet knows up to %d "
                                 "(upgrade edgefleet)" % (self.location, version, SCHEMA_VERSION), self.location)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    self.db.execute(statement)
                self.db.execute("UPDATE edgefleet_schema SET version=%s", (step,))

    def schema_version(self):
        row = self.db.execute("SELECT version FROM edgefleet_schema").fetchone()
        return row["version"] if row is not None else None

    def close(self):
        self.db.close()

    def commit(self, durable=True):
        if not durable and self.db.info.transaction_status == self.psycopg.pq.TransactionStatus.INTRANS:
            # No wait for the write-ahead log's flush: a heartbeat's telemetry is replaced a
            # second later, and its commit is most of what ingesting it costs.
            self.db.execute("SET LOCAL synchronous_commit TO OFF")
        self.db.commit()

    def rollback(self):
        if self.db.closed or self.db.broken:
            self._live()   # nothing to roll back: the server ended the session and its transaction
            return
        self.db.rollback()

    def _run(self, query, args=()):
        return self._live().execute(query, args)

    # -- nodes ------------------------------------------------------------------------------

    def upsert_node(self, node_id, board, runtime, fw, boot, caps, state="online", now=None, slot=None):
        self._run(
            "INSERT INTO nodes (id, board, runtime, fw, slot, boot, caps, state, last_seen) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (id) DO UPDATE SET board=excluded.board, runtime=excluded.runtime, fw=excluded.fw, "
            "slot=excluded.slot, boot=excluded.boot, caps=excluded.caps, state=excluded.state, "
            "last_seen=excluded.last_seen",
            (node_id, board, runtime, fw, slot, boot, json.dumps(caps), state, now or time.time()))

    def set_node_state(self, node_id, state, now=None):
        cur = self._run("UPDATE nodes SET state=%s, last_seen=COALESCE(%s, last_seen) WHERE id=%s",
                        (state, now, node_id))
        return cur.rowcount > 0

    def record_heartbeat(self, node_id, telemetry, now=None):
        row = self._run("UPDATE nodes SET telemetry=%s, last_seen=%s WHERE id=%s RETURNING boot, state",
                        (json.dumps(telemetry), now or time.time(), node_id)).fetchone()
        return {"boot": row["boot"], "state": row["state"]} if row is not None else None

    def record_heartbeats(self, beats, now=None):
        if not beats:
            return {}
        # One JSON document for the lot: psycopg adapts a big string far faster than lists.
        rows = self._run("UPDATE nodes SET telemetry=beat.telemetry::text, last_seen=%s "
                         "FROM json_to_recordset(%s::json) AS beat(id text, telemetry json) WHERE nodes.id=beat.id "
                         "RETURNING nodes.id, nodes.boot, nodes.state",
                         (now or time.time(), json.dumps([{"id": node_id, "telemetry": telemetry}
                                                          for node_id, telemetry in beats]))).fetchall()
        return {row["id"]: {"boot": row["boot"], "state": row["state"]} for row in rows}

    def lock_nodes(self, node_ids, wait_s=None):
        if wait_s is not None:
            self._run("SET LOCAL lock_timeout = %d" % int(wait_s * 1000))
        if node_ids:
            # The locking clause sits above the sort: rows are locked in id order.
            self._run("SELECT id FROM nodes WHERE id IN (SELECT json_array_elements_text(%s::json)) "
                      "ORDER BY id FOR NO KEY UPDATE", (json.dumps(sorted(node_ids)),))

    def busy(self, error):
        return isinstance(error, self.psycopg.errors.LockNotAvailable)

    def set_epoch(self, node_id, epoch):
        self._run("UPDATE nodes SET epoch=%s WHERE id=%s", (epoch, node_id))

    def nodes(self):
        return [_node_row(row) for row in self._run("SELECT * FROM nodes ORDER BY id")]

    def node(self, node_id):
        row = self._run("SELECT * FROM nodes WHERE id=%s", (node_id,)).fetchone()
        return _node_row(row) if row is not None else None

    # -- workloads and placements -------------------------------------------------------------

    def put_workload(self, wl):
        self._run(
            "INSERT INTO workloads (id, model, rate, input, replicas, constraints, extra) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (id) DO UPDATE SET model=excluded.model, rate=excluded.rate, input=excluded.input, "
            "replicas=excluded.replicas, constraints=excluded.constraints, extra=excluded.extra",
            (wl["id"], wl["model"], wl["rate"], json.dumps(wl.get("input", {"kind": "samples"})),
             wl.get("replicas", 1), json.dumps(wl.get("constraints", {})),
             json.dumps({k: wl[k] for k in WORKLOAD_EXTRA if k in wl})))

    def remove_workload(self, workload_id):
        self._run("DELETE FROM workloads WHERE id=%s", (workload_id,))
        self._run("DELETE FROM placements WHERE workload=%s", (workload_id,))

    def workloads(self):
        out = []
        for wl in self._run("SELECT * FROM workloads ORDER BY id"):
            wl["input"] = json.loads(wl["input"])
            wl["constraints"] = json.loads(wl["constraints"])
            wl.update(json.loads(wl.pop("extra", None) or "{}"))
            out.append(wl)
        return out

    def placements(self):
        return [(r["workload"], r["node"])
                for r in self._run("SELECT workload, node FROM placements ORDER BY workload, node")]

    def place(self, workload_id, node_id, now=None):
        self._run("INSERT INTO placements (workload, node, since) VALUES (%s,%s,%s) ON CONFLICT DO NOTHING",
                  (workload_id, node_id, now or time.time()))

    def unplace(self, workload_id, node_id):
        self._run("DELETE FROM placements WHERE workload=%s AND node=%s", (workload_id, node_id))

    # -- results and events -------------------------------------------------------------------

    def store_result(self, msg, now=None):
        # The primary key decides, whichever replica got the message: a second insert of the same
        # (node, boot, seq), concurrent or later, is no row.
        cur = self._run(
            "INSERT INTO results (node, boot, seq, workload, label, truth, score, us, up, received, outputs) "
            "SELECT %s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s WHERE NOT EXISTS "
            "(SELECT 1 FROM result_floors WHERE node=%s AND boot=%s AND through>=%s) "
            "ON CONFLICT (node, boot, seq) DO NOTHING",
            (msg["node"], msg["boot"], msg["seq"], msg["wl"], msg["label"], msg.get("truth"), msg["score"],
             msg["us"], msg["up"], now or time.time(), result_outputs(msg), msg["node"], msg["boot"], msg["seq"]))
        return cur.rowcount == 1

    def stored_result(self, node_id, boot, seq):
        row = self._run("SELECT workload, label, truth, score, us, up, outputs FROM results "
                        "WHERE node=%s AND boot=%s AND seq=%s", (node_id, boot, seq)).fetchone()
        if row is None:
            return None
        values = list(row.values())
        return stored_result_row(values[:6], values[6])

    def contiguous_results(self, node_id, boot, since=0):
        floor = self._run("SELECT through FROM result_floors WHERE node=%s AND boot=%s", (node_id, boot)).fetchone()
        floor = max(floor["through"] if floor else 0, since)
        if self._run("SELECT 1 FROM results WHERE node=%s AND boot=%s AND seq=%s",
                     (node_id, boot, floor + 1)).fetchone() is None:
            return floor
        return self._run(
            "SELECT MIN(seq) AS top FROM results r WHERE node=%s AND boot=%s AND seq>%s AND NOT EXISTS "
            "(SELECT 1 FROM results n WHERE n.node=r.node AND n.boot=r.boot AND n.seq=r.seq+1)",
            (node_id, boot, floor)).fetchone()["top"]

    def result_counts(self):
        return {r["node"]: r["n"] for r in self._run("SELECT node, COUNT(*) AS n FROM results GROUP BY node")}

    def result_totals(self):
        return {r["workload"]: {"results": r["n"], "correct": r["correct"] or 0, "with_truth": r["with_truth"] or 0,
                                "sum_us": r["sum_us"] or 0}
                for r in self._run(
                    "SELECT workload, COUNT(*) AS n, "
                    "SUM(CASE WHEN truth IS NOT NULL AND truth = label THEN 1 ELSE 0 END) AS correct, "
                    "SUM(CASE WHEN truth IS NOT NULL THEN 1 ELSE 0 END) AS with_truth, SUM(us)::bigint AS sum_us "
                    "FROM results GROUP BY workload")}

    def recent_results(self, workload, since, limit=5000):
        rows = self._run(
            "SELECT received, score, us, CASE WHEN truth IS NULL THEN NULL ELSE truth = label END AS correct "
            "FROM results WHERE workload=%s AND received>=%s ORDER BY received DESC LIMIT %s",
            (workload, since, limit)).fetchall()
        return [(r["received"], r["score"], r["us"], r["correct"]) for r in reversed(rows)]

    # -- retention ----------------------------------------------------------------------------

    def newest_times(self, table, n):
        column = ARRIVAL[table]
        row = self._run("SELECT %s AS at FROM %s ORDER BY %s DESC LIMIT 1 OFFSET %%s" % (column, table, column),
                        (n - 1,)).fetchone()
        return row["at"] if row else None

    def prune_results(self, before, limit):
        doomed = [(r["node"], r["boot"], r["seq"]) for r in self._run(
            "SELECT node, boot, seq FROM results WHERE received<%s ORDER BY received LIMIT %s", (before, limit))]
        floors = {}
        for node, boot, seq in doomed:
            floors[(node, boot)] = max(seq, floors.get((node, boot), 0))
        with self._live().cursor() as cur:
            cur.executemany("INSERT INTO result_floors (node, boot, through) VALUES (%s,%s,%s) "
                            "ON CONFLICT (node, boot) DO UPDATE SET through=GREATEST(result_floors.through, "
                            "excluded.through)", [(node, boot, seq) for (node, boot), seq in floors.items()])
            cur.executemany("DELETE FROM results WHERE node=%s AND boot=%s AND seq=%s", doomed)
            # A lane's newest accepted position stays: it is where the lane continues from.
            cur.executemany("DELETE FROM accepted a WHERE node=%s AND boot=%s AND seq=%s AND pos < "
                            "(SELECT MAX(pos) FROM accepted b WHERE b.workload=a.workload AND b.lane=a.lane)", doomed)
        return len(doomed)

    def prune_events(self, before, limit):
        return self._run("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts<%s ORDER BY ts LIMIT %s)",
                         (before, limit)).rowcount

    # -- leadership -------------------------------------------------------------------------------
    # Every statement takes the one row's lock: a claim waits for a leader's transaction that
    # checked or renewed its token, then finds the lease renewed (or the holder gone) and claims
    # nothing; a stale leader's check finds the new token and its transaction is rolled back.

    def claim_leadership(self, holder, ttl_s):
        row = self._run("UPDATE leadership SET holder=%%s, token=token+1, expires=%s+%%s WHERE id=1 AND "
                        "(holder IS NULL OR expires<%s) RETURNING token" % (DB_NOW, DB_NOW), (holder, ttl_s)).fetchone()
        return row["token"] if row else None

    def renew_leadership(self, holder, token, ttl_s):
        return self._run("UPDATE leadership SET expires=%s+%%s WHERE id=1 AND holder=%%s AND token=%%s" % DB_NOW,
                         (ttl_s, holder, token)).rowcount == 1

    def check_leadership(self, holder, token):
        return self._run("SELECT 1 FROM leadership WHERE id=1 AND holder=%s AND token=%s FOR SHARE",
                         (holder, token)).fetchone() is not None

    def leadership(self):
        row = self._run("SELECT holder, token, expires-%s AS expires_in FROM leadership WHERE id=1" % DB_NOW).fetchone()
        if row is None or row["holder"] is None:
            return None
        return dict(row)

    def add_event(self, node_id, level, kind, msg, data=None, now=None):
        self._run("INSERT INTO events (ts, node, level, kind, msg, data) VALUES (%s,%s,%s,%s,%s,%s)",
                  (now or time.time(), node_id, level, kind, msg, json.dumps(data) if data is not None else None))

    def events(self, node_id=None, limit=50, kinds=None):
        query = "SELECT * FROM events"
        where, args = [], ()
        if node_id:
            where.append("node=%s")
            args += (node_id,)
        if kinds:
            where.append("kind = ANY(%s)")
            args += (list(kinds),)
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT %s"
        rows = list(self._run(query, args + (limit,)))
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else None
        rows.reverse()
        return rows

    # -- the stream ledger ------------------------------------------------------------------------

    def open_stretches(self, workload=None):
        q = "SELECT workload, lane, node, start FROM streams WHERE until IS NULL"
        args = ()
        if workload is not None:
            q += " AND workload=%s"
            args = (workload,)
        return [(r["workload"], r["lane"], r["node"], r["start"]) for r in self._run(q + " ORDER BY workload, lane", args)]

    def newest_stretch(self, workload, node):
        r = self._run("SELECT lane, start, until FROM streams WHERE workload=%s AND node=%s "
                      "ORDER BY start DESC LIMIT 1", (workload, node)).fetchone()
        return (r["lane"], r["start"], r["until"]) if r else None

    def open_lane(self, workload, node):
        r = self._run("SELECT lane FROM streams WHERE workload=%s AND node=%s AND until IS NULL",
                      (workload, node)).fetchone()
        return r["lane"] if r else None

    def lane_marks(self, workload, lane):
        r = self._run("SELECT MAX(pos) AS m FROM accepted WHERE workload=%s AND lane=%s", (workload, lane)).fetchone()
        s = self._run("SELECT MAX(start) AS m FROM streams WHERE workload=%s AND lane=%s", (workload, lane)).fetchone()
        return r["m"], s["m"]

    def open_stretch(self, workload, lane, node, start):
        self._run("INSERT INTO streams (workload, lane, node, start, until) VALUES (%s,%s,%s,%s,NULL) "
                  "ON CONFLICT (workload, lane, start) DO UPDATE SET node=excluded.node, until=NULL",
                  (workload, lane, node, start))

    def close_stretch(self, workload, lane, node, until):
        self._run("UPDATE streams SET until=%s WHERE workload=%s AND lane=%s AND node=%s AND until IS NULL",
                  (until, workload, lane, node))

    def reopen_stretch(self, workload, lane, node, start):
        self._run("UPDATE streams SET until=NULL WHERE workload=%s AND lane=%s AND node=%s AND start=%s",
                  (workload, lane, node, start))

    def drop_stretch(self, workload, lane, node, start):
        self._run("DELETE FROM streams WHERE workload=%s AND lane=%s AND node=%s AND start=%s",
                  (workload, lane, node, start))

    def owner_lane(self, workload, node, pos):
        r = self._run("SELECT lane FROM streams WHERE workload=%s AND node=%s AND start<=%s AND "
                      "(until IS NULL OR %s<until) ORDER BY start DESC LIMIT 1",
                      (workload, node, pos, pos)).fetchone()
        return r["lane"] if r else None

    def accept_position(self, workload, lane, pos, node, boot, seq):
        cur = self._run("INSERT INTO accepted (workload, lane, pos, node, boot, seq) VALUES (%s,%s,%s,%s,%s,%s) "
                        "ON CONFLICT DO NOTHING", (workload, lane, pos, node, boot, seq))
        return cur.rowcount == 1

    def tracks(self, workload):
        return self._run("SELECT 1 FROM streams WHERE workload=%s LIMIT 1", (workload,)).fetchone() is not None

    def accepted_by(self, workload, lane, pos):
        r = self._run("SELECT node FROM accepted WHERE workload=%s AND lane=%s AND pos=%s",
                      (workload, lane, pos)).fetchone()
        return r["node"] if r else None

    def forget_streams(self, workload):
        self._run("DELETE FROM streams WHERE workload=%s", (workload,))

    # -- what the reconciler keeps across restarts ------------------------------------------------

    def set_resume(self, node_id, workload, pos):
        if pos is None:
            self._run("DELETE FROM resume WHERE node=%s AND workload=%s", (node_id, workload))
        else:
            self._run("INSERT INTO resume (node, workload, pos) VALUES (%s,%s,%s) "
                      "ON CONFLICT (node, workload) DO UPDATE SET pos=excluded.pos", (node_id, workload, pos))

    def resume_positions(self):
        return {(r["node"], r["workload"]): r["pos"] for r in self._run("SELECT node, workload, pos FROM resume")}

    def put_move(self, move):
        self._run("INSERT INTO moves (workload, lane, state, data) VALUES (%s,%s,%s,%s) "
                  "ON CONFLICT (workload, lane) DO UPDATE SET state=excluded.state, data=excluded.data",
                  (move["workload"], move["lane"], move["state"], json.dumps(move)))

    def remove_move(self, workload, lane):
        self._run("DELETE FROM moves WHERE workload=%s AND lane=%s", (workload, lane))

    def moves(self):
        return [json.loads(r["data"]) for r in self._run("SELECT data FROM moves ORDER BY workload, lane")]

    def set_draining(self, node_id, draining):
        if draining:
            self._run("INSERT INTO drains (node) VALUES (%s) ON CONFLICT DO NOTHING", (node_id,))
        else:
            self._run("DELETE FROM drains WHERE node=%s", (node_id,))

    def draining(self):
        return {r["node"] for r in self._run("SELECT node FROM drains")}

    # -- telemetry history ------------------------------------------------------------------------

    def put_samples(self, samples):
        with self._live().cursor() as cur:
            cur.executemany(
                "INSERT INTO samples (node, res, ts, cpu, mem_free, battery, rps) VALUES (%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (node, res, ts) DO UPDATE SET cpu=excluded.cpu, mem_free=excluded.mem_free, "
                "battery=excluded.battery, rps=excluded.rps", list(samples))

    def samples(self, node_id, res, since):
        return [(r["ts"], r["cpu"], r["mem_free"], r["battery"], r["rps"]) for r in self._run(
            "SELECT ts, cpu, mem_free, battery, rps FROM samples WHERE node=%s AND res=%s AND ts>=%s ORDER BY ts",
            (node_id, res, since))]

    def prune_samples(self, res, before):
        return self._run("DELETE FROM samples WHERE res=%s AND ts<%s", (res, before)).rowcount


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
