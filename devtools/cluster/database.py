"""Postgres (Debian's `postgresql`), Airflow's metadata database and Celery's result backend: a
private data folder on its own port, run as the `postgres` user when we are root (its server
refuses to run as root), password-protected, listening on 127.0.0.1 only."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from devtools.cluster.processes import require_free, run_tool
from devtools.cluster.settings import DATABASE, SWEEP_DATABASE, ClusterError, ClusterSettings, write_private

log = logging.getLogger(__name__)


def pg_bin(tool: str) -> str:
    """A Postgres server tool: on PATH, else from Debian's /usr/lib/postgresql/<newest>/bin."""
    found = shutil.which(tool)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise ClusterError(f"Postgres' {tool} not found: install the Debian package `postgresql` (`make cluster-deps`)")
    return str(versions[-1])


def as_postgres(cmd: list[str]) -> list[str]:
    """Postgres refuses to run as root: as root, run its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def init_postgres(settings: ClusterSettings, password: str) -> Path:
    data = settings.postgres_dir / "data"
    if (data / "PG_VERSION").is_file():
        return data
    settings.postgres_dir.mkdir(parents=True, exist_ok=True)
    pwfile = settings.postgres_dir / "initdb.pw"
    write_private(pwfile, password + "\n")
    if os.geteuid() == 0:
        shutil.chown(settings.postgres_dir, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        reach = subprocess.run(as_postgres(["test", "-w", str(settings.postgres_dir)]), capture_output=True)
        if reach.returncode:
            raise ClusterError(
                f"the postgres user cannot write {settings.postgres_dir}: every folder above it must be "
                "searchable by others (chmod o+x), or choose another --state-dir"
            )
    try:
        run_tool(
            as_postgres(
                [
                    pg_bin("initdb"),
                    "--pgdata",
                    str(data),
                    "--username",
                    "postgres",
                    "--pwfile",
                    str(pwfile),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            "initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    return data


def postgres_running(settings: ClusterSettings) -> bool:
    data = settings.postgres_dir / "data"
    if not (data / "PG_VERSION").is_file():
        return False
    status = subprocess.run(as_postgres([pg_bin("pg_ctl"), "status", "-D", str(data)]), capture_output=True)
    return status.returncode == 0


def start_postgres(settings: ClusterSettings, password: str) -> None:
    data = init_postgres(settings, password)
    if not postgres_running(settings):
        require_free(settings.postgres_port, "Postgres")
        # TCP on 127.0.0.1 only, no Unix socket (nothing to place in a system folder).
        options = f"-c port={settings.postgres_port} -c listen_addresses=127.0.0.1 -c unix_socket_directories="
        log_file = settings.postgres_dir / "postgres.log"
        run_tool(
            as_postgres(
                [pg_bin("pg_ctl"), "start", "-D", str(data), "-l", str(log_file), "-w", "-t", "60", "-o", options]
            ),
            f"starting Postgres (log: {log_file})",
        )
        log.info("started Postgres on 127.0.0.1:%d (data %s)", settings.postgres_port, data)
    create_database(settings, password)


def create_database(settings: ClusterSettings, password: str) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(
        host="127.0.0.1", port=settings.postgres_port, user="postgres", password=password, dbname="postgres"
    )
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(DATABASE)), (password,)
                )
            for name in (DATABASE, SWEEP_DATABASE):
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(DATABASE))
                    )
    finally:
        connection.close()


def stop_postgres(settings: ClusterSettings) -> bool:
    if not postgres_running(settings):
        return False
    data = settings.postgres_dir / "data"
    run_tool(
        as_postgres([pg_bin("pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"]), "stopping Postgres"
    )
    log.info("stopped Postgres (data %s)", data)
    return True
