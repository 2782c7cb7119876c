"""The registry: where the controller keeps the fleet durably (nodes, declared workloads,
placements, results, the stream ledger, the audit log).

`Registry` (base.py) is the storage interface the rest of the controller uses; it owns the schema
and its version. `SqliteRegistry` (sqlite.py) is the default: a file, zero setup.
`PostgresRegistry` (postgres.py) implements the same interface with its own DDL for the same
schema versions, for fleets that outgrow one controller host (docs/scale.md). `open_registry`
chooses from the location's form: a postgresql:// URL, else a file.
"""
from .base import SCHEMA_VERSION, Registry  # noqa: F401


def default_path():
    from ..paths import registry_file
    return registry_file()


def open_registry(location=None, readonly=False, idle_in_transaction_s=None):
    """The registry at `location` (a postgresql:// URL, a file path, ":memory:"; default:
    default_path()). idle_in_transaction_s: PostgreSQL ends a session idle that long inside a
    transaction (PostgresRegistry)."""
    from .postgres import PostgresRegistry, is_postgres_url
    if is_postgres_url(location):
        return PostgresRegistry(location, readonly=readonly, idle_in_transaction_s=idle_in_transaction_s)
    from .sqlite import SqliteRegistry
    return SqliteRegistry(location or default_path(), readonly=readonly)
