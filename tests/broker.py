"""A real RabbitMQ (Debian's rabbitmq-server) on free loopback ports, and real Celery workers.

The broker runs from a folder of the test's own, with its own epmd (Erlang's port mapper),
both started here and stopped by their PIDs: nothing outlives the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Where Debian's package puts the server script (the one in /usr/sbin switches user).
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RabbitMQ:
    """`start()`, `stop()` (SIGTERM, then SIGKILL), `restart()`, on the same ports and data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        (folder / "home").mkdir(parents=True, exist_ok=True)
        (folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # Longer than any test's upload; in production, longer than the task time limit.
            "consumer_timeout = 3600000\n")
        (folder / "enabled_plugins").write_text("[].\n")
        (folder / "env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        return os.environ | {
            "HOME": str(self.folder / "home"),
            "RABBITMQ_NODENAME": f"rabbit-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.folder / "advanced.config"),
            "RABBITMQ_PID_FILE": str(self.folder / "rabbitmq.pid"),
        }

    def start(self, timeout: float = 90.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    @property
    def running(self) -> bool:
        return self._server is not None

    def launch(self) -> None:
        """Start epmd and the server; `wait_ready` waits until it takes connections."""
        if self._epmd is None:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self._env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        log = (self.folder / "server.log").open("ab")
        self._server = subprocess.Popen([str(SERVER)], env=self._env(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self._server is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while not self._accepts_amqp():
            if self._server.poll() is not None or time.monotonic() > deadline:
                tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                self.close()
                raise RuntimeError(f"RabbitMQ did not start:\n{tail}")
            time.sleep(0.25)

    def _accepts_amqp(self) -> bool:
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=1) as connection:
                connection.ensure_connection(max_retries=1)
            return True
        except Exception:
            return False

    def queues(self) -> set[str]:
        """The names of the queues the broker holds now (rabbitmqctl, ~0.4 s)."""
        listed = subprocess.run([str(SERVER.with_name("rabbitmqctl")), "-q", "list_queues",
                                 "name"], env=self._env(), capture_output=True, text=True,
                                check=True, timeout=60)
        return {line.strip() for line in listed.stdout.splitlines()} - {"name", ""}

    def stop(self) -> None:
        """Stop the server (not epmd), its data kept."""
        if self._server is None:
            return
        _end(self._server, signal.SIGTERM, grace=20)
        self._server = None

    def restart_app(self) -> None:
        """Restart the broker application in its running node (`rabbitmqctl stop_app`,
        `start_app`): every connection is closed and the durable queues are recovered, as
        in a restart of the server, in a few seconds rather than the node's boot."""
        ctl = str(SERVER.with_name("rabbitmqctl"))
        for step in ("stop_app", "start_app"):
            subprocess.run([ctl, "-q", step], env=self._env(), capture_output=True,
                           check=True, timeout=120)
        self.wait_ready()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._epmd is not None:
            _end(self._epmd, signal.SIGTERM, grace=5)
            self._epmd = None


def _end(process: subprocess.Popen[bytes], how: signal.Signals, *, grace: float) -> None:
    """Signal the process's group (a server and its helpers), then kill what is left."""
    try:
        os.killpg(process.pid, how)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        process.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def have_rabbitmq() -> bool:
    return SERVER.exists() and shutil.which("epmd") is not None


class Worker:
    """`uploader worker` in a process group of its own (so that SIGKILL takes its pool too),
    with its own state folder: a machine of its own. Its log is `log`."""

    def __init__(self, name: str, env: dict[str, str], folder: Path, *,
                 concurrency: int = 1, part_concurrency: int = 2,
                 app: str | None = None, named: bool = True) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"{name}.log"
        env = env | {"XDG_STATE_HOME": str(folder / f"{name}-state")}
        if app is None:
            command = [sys.executable, "-m", "uploader", "worker",
                       f"--concurrency={concurrency}", f"--part-concurrency={part_concurrency}",
                       *([f"--hostname={name}@%h"] if named else [])]
        else:  # a test's own app module, on top of uploader.celery
            env |= {"UPLOADER_PART_CONCURRENCY": str(part_concurrency)}
            command = [sys.executable, "-m", "celery", "-A", app, "worker",
                       f"--concurrency={concurrency}", f"--hostname={name}@%h",
                       "--loglevel=INFO"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, cwd=ROOT,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the worker and its pool: the machine is gone."""
        _end(self.process, signal.SIGKILL, grace=0)

    def stop(self) -> None:
        if self.process.poll() is None:
            _end(self.process, signal.SIGTERM, grace=10)


class EarlyBroker:
    """A RabbitMQ launched as the session starts, when broker tests will run, so that its
    boot (10-15 s) overlaps the tests before them; the broker tests' fixture takes it."""

    broker: RabbitMQ | None = None
    folder: Path | None = None

    @classmethod
    def launch(cls) -> None:
        if cls.broker is None and have_rabbitmq():
            cls.folder = Path(tempfile.mkdtemp(prefix="uploader-rabbitmq-"))
            cls.broker = RabbitMQ(cls.folder)
            cls.broker.launch()

    @classmethod
    def take(cls) -> RabbitMQ | None:
        broker, cls.broker = cls.broker, None
        return broker

    @classmethod
    def close(cls) -> None:
        if cls.broker is not None:
            cls.broker.close()
            cls.broker = None
        if cls.folder is not None:
            shutil.rmtree(cls.folder, ignore_errors=True)
            cls.folder = None
