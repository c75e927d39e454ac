"""A throwaway PostgreSQL cluster on 127.0.0.1, for the integration tests and the benchmarks.

The binaries are Debian's (``apt-get install postgresql``, which ``.ci/services.sh`` runs): they
live in ``/usr/lib/postgresql/<major>/bin``, off the PATH. PostgreSQL refuses to run as root, so
when the tests run as root (CI containers) the cluster belongs to the ``postgres`` system user
that the package creates, and every server command runs as that user.

The cluster listens on TCP only (a free port on 127.0.0.1, password authentication); its data,
its socket and its log live in one temporary folder that ``stop`` deletes.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from cv_assets_tests.support.processes import free_port

SUPERUSER = "cv_assets"
REPO = Path(__file__).resolve().parents[2]


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; the newest major wins."""
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []

    def major(p: Path) -> int:
        return int(p.parent.name) if p.parent.name.isdigit() else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for d in candidates:
        if all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # holds data/, the log and the password file
    port: int
    password: str
    os_user: str | None  # the user the server runs as, when it is not this process's user

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, db: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        exe = str(self.bindir / args[0])
        res = subprocess.run(
            [exe, *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self.os_user,
            group=self.os_user,
            extra_groups=[] if self.os_user else None,  # none of root's groups either
        )
        if res.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else "(no log)"
            raise RuntimeError(
                f"{args[0]} {' '.join(args[1:3])} failed ({res.returncode}): "
                f"{res.stderr.strip() or res.stdout.strip()}\nserver log tail:\n{log}"
            )

    def _options(self) -> str:
        # TCP on loopback only; the socket in our own folder (the Debian default,
        # /var/run/postgresql, may not exist or belong to someone else). A throwaway cluster
        # needs no crash safety, so the tests skip fsync unless a benchmark asks for it.
        return f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            self._options(),
        )

    def restart(self) -> None:
        """Stop (fast: open connections are cut) and start again on the same port."""
        self._run(
            "pg_ctl",
            "restart",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "-o",
            self._options(),
        )

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def query(self, db: str, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of one query, on a connection of its own (closed before returning)."""
        import psycopg2

        conn = psycopg2.connect(self.dsn(db))
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()


def start_cluster(databases: tuple[str, ...] = (), durable: bool = False) -> PgCluster:
    """initdb into a fresh temporary folder, start it on a free port, create ``databases``.

    Raises ``FileNotFoundError`` when no PostgreSQL binaries are installed.
    """
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError(
            "PostgreSQL binaries (initdb, pg_ctl, postgres) are not installed: looked on PATH and "
            "in /usr/lib/postgresql/*/bin; run .ci/services.sh (apt-get install postgresql)"
        )
    os_user, pw = None, None
    if os.geteuid() == 0:
        os_user = "postgres"
        try:
            pw = pwd.getpwnam(os_user)
        except KeyError:
            raise RuntimeError(
                "running as root, and PostgreSQL refuses root: the 'postgres' system user "
                "(created by Debian's postgresql package) does not exist"
            ) from None
    root = Path(tempfile.mkdtemp(prefix="cv_assets_pg_"))
    password = secrets.token_hex(12)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if pw is not None:
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    cluster = PgCluster(bindir, root, free_port(), password, os_user)
    try:
        cluster._run(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        if not durable:
            with open(cluster.data / "postgresql.conf", "a") as f:
                f.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        cluster.start()
        for db in databases:
            cluster.create_database(db)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def postgres_dagster_yaml() -> dict:
    """``deploy/dagster.postgres.yaml``, with the port read from the environment as well.

    The deployment's Postgres listens on 5432; the throwaway cluster on a free port.
    """
    import yaml

    conf = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    db = conf["storage"]["postgres"]["postgres_db"]
    db["port"] = {"env": "DAGSTER_PG_PORT"}
    if "scheme" not in db:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, on which dagster-postgres
        # 0.29 fails at its first event (NOTIFY with a bound parameter); it needs psycopg2.
        warnings.warn(
            "deploy/dagster.postgres.yaml: postgres_db has no `scheme: postgresql+psycopg2`; "
            "Dagster's Postgres storage fails without it (SQLAlchemy 2.1 picks psycopg 3). "
            "The integration tests add it.",
            stacklevel=2,
        )
        db["scheme"] = "postgresql+psycopg2"
    return conf


def postgres_instance_env(
    cluster: PgCluster, db: str, dagster_home: Path, conf: dict | None = None
) -> dict[str, str]:
    """Write ``conf`` (default: the deployment's) as ``dagster_home/dagster.yaml``; the
    variables it reads."""
    import yaml

    dagster_home.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(conf if conf is not None else postgres_dagster_yaml())
    (dagster_home / "dagster.yaml").write_text(text)
    return {
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(cluster.port),
        "DAGSTER_PG_USER": SUPERUSER,
        "DAGSTER_PG_PASSWORD": cluster.password,
        "DAGSTER_PG_DB": db,
    }


def wait_until_accepting(cluster: PgCluster, timeout: float = 30) -> None:
    """Block until the server answers a query (after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.query("postgres", "SELECT 1")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
