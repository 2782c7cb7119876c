"""A throwaway PostgreSQL server, as MosquittoBroker (broker.py) is a throwaway broker: Debian's
`postgresql` package's binaries, a fresh data directory in a temp dir, one port on 127.0.0.1,
trust authentication. For tests and benchmarks of the PostgreSQL registry; never the system
service, never a production database (docs/scale.md says how to run one of those).

initdb refuses to run as root, so as root the server runs as the `postgres` user the package
creates, in a temp dir handed to it.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from .errors import StoreError
from .netutil import free_port

USER = "ef"


def postgres_bindir():
    """The newest /usr/lib/postgresql/N/bin with initdb in it, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    def __init__(self, port=None, host="127.0.0.1", durable=False):
        # durable=False: no fsync. A test's server dies with its data; commits then cost
        # microseconds, not a disk flush, and the registry tests stay quick. Benchmarks pass True.
        self.host = host
        self.port = port or free_port(host)
        self.durable = durable
        self.bindir = postgres_bindir()
        self.dir = None
        self._as = None

    def url(self, dbname="postgres"):
        return "postgresql://%s@%s:%d/%s" % (USER, self.host, self.port, dbname)

    def _run(self, *argv, check=True):
        return subprocess.run([os.path.join(self.bindir, argv[0])] + list(argv[1:]), user=self._as,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=check, timeout=60)

    def start(self):
        if self.bindir is None:
            raise StoreError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.dir = tempfile.mkdtemp(prefix="edgefleet-pg-")
        if os.geteuid() == 0:
            self._as = "postgres"
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        data = os.path.join(self.dir, "data")
        options = "-p %d -k %s -c listen_addresses=%s -c max_connections=200" % (self.port, self.dir, self.host)
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._run("initdb", "-D", data, "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8")
            self._run("pg_ctl", "-D", data, "-o", options, "-l", os.path.join(self.dir, "log"), "-w", "start")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            out = (getattr(e, "stdout", None) or b"").decode(errors="replace").strip()
            self.stop()
            raise StoreError("PostgreSQL did not start: %s" % (out.splitlines()[-1] if out else e)) from None
        return self

    def create_database(self, name):
        """A new, empty database; its URL."""
        psycopg = __import__("psycopg")
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute('CREATE DATABASE "%s"' % name)
        return self.url(name)

    def stop(self):
        if self.dir is None:
            return
        data = os.path.join(self.dir, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            self._run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
