"""The registry: where the controller keeps the fleet durably (nodes, declared workloads,
placements, results, the stream ledger, the audit log).

`Registry` (base.py) is the storage interface the rest of the controller uses; it owns the schema
and its version. `SqliteRegistry` (sqlite.py) is the one backend today: a file, zero setup. A
second backend implements the same interface with its own DDL for the same schema versions and
is chosen by `open_registry` from the location's form.
"""
from .base import SCHEMA_VERSION, Registry  # noqa: F401


def default_path():
    from ..paths import registry_file
    return registry_file()


def open_registry(location=None, readonly=False):
    """The registry at `location` (a file path, ":memory:", default: default_path())."""
    from .sqlite import SqliteRegistry
    return SqliteRegistry(location or default_path(), readonly=readonly)
