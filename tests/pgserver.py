"""A real PostgreSQL server for the test session.

``APPENDMUCH_PG_CONNINFO`` set: that server is used.  Otherwise, when PostgreSQL is
installed (``pg_config --bindir`` or /usr/lib/postgresql/*/bin), a throwaway cluster is
created in a temporary directory (initdb + pg_ctl, run as the ``postgres`` OS user when
the tests run as root, because postgres refuses to run as root), started on a free port,
and stopped and removed when the session ends, even after failures.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ENV_CONNINFO = "APPENDMUCH_PG_CONNINFO"
ENV_REQUIRE = "APPENDMUCH_REQUIRE_PG"

HOW_TO_ENABLE = (
    "PostgreSQL tests need a server: set APPENDMUCH_PG_CONNINFO (e.g. "
    "'host=localhost dbname=test user=me'), or install PostgreSQL (Debian: apt-get install "
    "postgresql) so the tests can start a throwaway one"
)


def find_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl, or None."""
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    candidates.extend(
        sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    )
    for directory in candidates:
        if os.access(os.path.join(directory, "initdb"), os.X_OK) and os.access(
            os.path.join(directory, "pg_ctl"), os.X_OK
        ):
            return Path(directory)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempCluster:
    """initdb + pg_ctl in a temporary directory; ``stop()`` removes everything."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="appendmuch-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.running = False
        if os.geteuid() == 0:  # (the server runs as postgres: see _command)
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.root.chmod(0o700)

    def _run(self, *args: str) -> None:
        command = _command(self.bindir, *args)
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}"
            )

    def start(self) -> str:
        _stop_orphans(self.bindir)
        (self.root / "owner").write_text(str(os.getpid()))
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        # Settings go into postgresql.conf so that every later start uses them too.
        settings = (
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.root}'\n"
            "listen_addresses = '127.0.0.1'\n"
            "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
        )
        conf = self.data / "postgresql.conf"
        with open(conf, "a", encoding="utf-8") as fh:
            fh.write(settings)
        self.resume()
        self.running = True
        atexit.register(self.stop)
        return self.conninfo

    @property
    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def halt(self) -> None:
        """Stop the server, keeping its data (the database "goes away")."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start a halted server again on the same port."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        if self.running:
            self.running = False
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def _stop_orphans(bindir: Path) -> None:
    """Stop and remove the throwaway servers of sessions that died without stopping them
    (a pytest worker killed by a signal never runs its atexit hook; its server would run
    on, holding memory and a port, until the machine restarts)."""
    for root in glob.glob(os.path.join(tempfile.gettempdir(), "appendmuch-pg-*")):
        try:
            owner = int(Path(root, "owner").read_text())
            os.kill(owner, 0)
            continue  # (its session still runs)
        except ProcessLookupError:
            pass  # (dead: an orphan)
        except (OSError, ValueError):
            continue  # (no owner recorded yet, or not ours to judge)
        data = Path(root, "data")
        if (data / "postmaster.pid").exists():
            command = _command(bindir, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
            subprocess.run(command, capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _command(bindir: Path, program: str, *args: str) -> list[str]:
    """A PostgreSQL program's command line, run as the ``postgres`` OS user when this
    process is root (the server refuses to run as root)."""
    command = [str(bindir / program), *args]
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def private_server() -> Iterator[TempCluster]:
    """A started server of the caller's own (stopped afterwards), so a test can stop
    and start it; skips (or fails, when required) without PostgreSQL binaries."""
    import pytest

    bindir = find_bindir()
    if bindir is None:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but PostgreSQL binaries are missing", pytrace=False)
        pytest.skip(HOW_TO_ENABLE)
    cluster = TempCluster(bindir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


class Server:
    """The session's server: an external one, a started cluster, or none (with why)."""

    def __init__(self) -> None:
        self.conninfo: str | None = None
        self.cluster: TempCluster | None = None
        self.unavailable: str | None = None
        self._started = False

    def get(self) -> str | None:
        if not self._started:
            self._started = True
            external = os.environ.get(ENV_CONNINFO)
            if external:
                self.conninfo = external
            else:
                bindir = find_bindir()
                if bindir is None:
                    self.unavailable = HOW_TO_ENABLE
                else:
                    cluster = TempCluster(bindir)
                    try:
                        self.conninfo = cluster.start()
                        self.cluster = cluster
                    except (OSError, RuntimeError) as exc:
                        cluster.stop()
                        self.unavailable = f"could not start PostgreSQL: {exc}"
        return self.conninfo

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


SERVER = Server()
