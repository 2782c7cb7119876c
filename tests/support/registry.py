"""Reading a test fleet's SQLite registry while its controller writes it: one query on a
connection of its own, closed again."""
import sqlite3


def rows(db_path, sql, args=()):
    db = sqlite3.connect(db_path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def stream_ledger(db_path, workload):
    """A moving workload's accounting: ([(stream position, node that owns it)], in position
    order; the `moved` events' messages, oldest first)."""
    accepted = rows(db_path, "SELECT pos, node FROM accepted WHERE workload=? ORDER BY pos", (workload,))
    moved = rows(db_path, "SELECT msg FROM events WHERE kind='moved' ORDER BY id")
    return accepted, [m for m, in moved]
