"""Private RabbitMQ nodes for the chaos suite: one node, or a cluster of three that a scenario can
kill a node of (kill -9) and bring back.

Every node is the installed RabbitMQ (Debian's ``rabbitmq-server``, 3.10 here) with a name, AMQP
port, distribution port, data directory and config file of its own, and the cluster's one Erlang
cookie in a home directory of its own, so the machine's RabbitMQ (127.0.0.1:5672, ``rabbit@localhost``)
is never touched: its config file pins the listener to 5672, so each node gets its own
``RABBITMQ_CONFIG_FILE`` and its own (empty) ``RABBITMQ_CONF_ENV_FILE``. Run as root, each node runs as
the ``rabbitmq`` user, as the package's own service does. Nodes two and three join the first with
``rabbitmqctl join_cluster``. Everything is stopped and removed by ``close()``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from chaos.harness import free_port
from chaos.servers import ServerProcess, as_user, give_to

# Debian's package: the scripts themselves, not /usr/sbin's wrappers (which switch user and directory,
# and drop the environment that names the node).
RABBITMQ_BIN = Path(os.environ.get("APERTURE_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
USER = "rabbitmq"
CTL_TIMEOUT_S = 60


class RabbitMQMissing(SystemExit):
    """The installed RabbitMQ is not there: one line saying how to get it, never a traceback."""


def _check_installed() -> None:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise RabbitMQMissing(
            f"RabbitMQ is not installed ({RABBITMQ_BIN}/rabbitmq-server not found): the chaos suite's RabbitMQ "
            "scenarios start private nodes of it (apt-get install rabbitmq-server, or APERTURE_RABBITMQ_BIN)"
        )


class Node(ServerProcess):
    """One node: ``start()`` returns once it accepts AMQP connections."""

    def __init__(
        self,
        root: Path,
        name: str,
        home: Path,
        host: str,
        prefix: list[str],
        *,
        management: bool = False,
        advanced: str = "",
    ) -> None:
        self.name = name  # the Erlang node name, e.g. chaos-1a2b-1@localhost
        self.dir = root / name.split("@")[0]
        self.dir.mkdir()
        self.port = free_port()
        self.dist_port = free_port()
        self.prefix = prefix
        self.url = f"amqp://guest:guest@{host}:{self.port}//"
        config = self.dir / "rabbitmq.conf"
        config.write_text(
            f"listeners.tcp.1 = {host}:{self.port}\n"
            # guest is refused from anywhere but the loopback by default; a partitioned node is elsewhere.
            "loopback_users = none\n"
            # A private node under test: no disk alarm on a nearly full /tmp stopping publishers.
            "disk_free_limit.absolute = 50MB\n"
            # Queue lengths (rabbitmqctl list_queues) refreshed every second, not every 5 s.
            "collect_statistics_interval = 1000\n"
        )
        # ``management``: the HTTP API (Flower's broker tab reads queue lengths from it) on a port of its own.
        self.management_port = free_port() if management else None
        if self.management_port:
            with config.open("a") as file:
                file.write(f"management.tcp.ip = {host}\nmanagement.tcp.port = {self.management_port}\n")
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n" if management else "[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not the system's, which names rabbit@localhost
        # ``advanced``: settings of the ``rabbit`` application that rabbitmq.conf has no key for (Erlang terms,
        # e.g. ``{dead_letter_worker_consumer_prefetch, 512}``), in an advanced.config of the node's own.
        (self.dir / "advanced.config").write_text(f"[{{rabbit, [{advanced}]}}].\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),  # the cluster's .erlang.cookie, for the server and rabbitmqctl alike
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": name,
            "RABBITMQ_NODE_IP_ADDRESS": host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            # Schedulers that sleep when idle instead of spinning: several private nodes share two cores with
            # the system they carry messages for.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}"
            " +sbwt none +sbwtdcpu none +sbwtdio none",
        }
        argv = [*prefix, *as_user(USER), str(RABBITMQ_BIN / "rabbitmq-server")]
        super().__init__(name, argv, env, self.dir / "server.log", self.dir)

    def start(self) -> None:
        """Starts it (on its data, if it ran before) and waits until it has booted."""
        give_to(self.dir, USER)
        self.launch(self._booted, CTL_TIMEOUT_S)

    def _booted(self) -> bool:
        # await_startup fails at once while the node is not yet known to epmd: asked again until it answers.
        try:
            self.ctl("await_startup", "--timeout", str(CTL_TIMEOUT_S))
            return True
        except RuntimeError:
            return False

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT_S) -> str:
        """``rabbitmqctl -n <this node> ...``; its output, or RuntimeError with what it said."""
        argv = [*self.prefix, *as_user(USER), str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.name, *args]
        done = subprocess.run(
            argv, env=self.env, cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stdout}{done.stderr}".strip())
        return done.stdout


class RabbitMQ:
    """``nodes`` private nodes (1, or 3 for a cluster that survives the loss of one), listening on
    ``host``, run with ``prefix`` before their commands (a network namespace of chaos/partition.py).

    ``url`` names every node (kombu's failover list, ``;``-separated), so a client whose node dies
    connects to the next one.
    """

    def __init__(
        self,
        *,
        nodes: int = 1,
        host: str = "127.0.0.1",
        prefix: list[str] | None = None,
        management: bool = False,
        advanced: str = "",
    ) -> None:
        _check_installed()
        # A directory of its own, owned by the user the nodes run as (a chaos system's own directory
        # is root's, closed to others).
        self.root = Path(tempfile.mkdtemp(prefix="aperture-rabbitmq-"))
        home = self.root / "home"
        home.mkdir()
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper())
        tag = f"chaos-{secrets.token_hex(2)}"
        self.nodes = [
            Node(
                self.root,
                f"{tag}-{i + 1}@localhost",
                home,
                host,
                prefix or [],
                management=management,
                advanced=advanced,
            )
            for i in range(nodes)
        ]
        give_to(self.root, USER)
        os.chmod(cookie, 0o400)
        try:
            for node in self.nodes:
                node.start()
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.ctl("stop_app")
                node.ctl("join_cluster", first.name)
                node.ctl("start_app")
                node.ctl("await_startup", "--timeout", str(CTL_TIMEOUT_S))
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return ";".join(node.url for node in self.nodes)

    def running(self) -> list[Node]:
        return [node for node in self.nodes if node.alive()]

    def ctl(self, *args: str) -> str:
        """rabbitmqctl on the first node that runs."""
        return self.running()[0].ctl(*args)

    def queues(self) -> list[dict[str, object]]:
        """Every queue of the default vhost: name, type, messages (ready + unacknowledged), leader."""
        out = self.ctl("list_queues", "-q", "--formatter", "json", "name", "type", "messages", "leader")
        return json.loads(out) if out.strip() else []

    def messages(self, queues: list[str] | None = None) -> int:
        """Messages held (ready or delivered and not yet acknowledged), in ``queues`` or in all."""
        return sum(int(str(q["messages"])) for q in self.queues() if queues is None or q["name"] in queues)

    def leader(self, queue: str) -> Node:
        """The node leading quorum queue ``queue`` (the one whose loss moves its leadership)."""
        for entry in self.queues():
            if entry["name"] == queue:
                return next(node for node in self.nodes if node.name == entry["leader"])
        raise LookupError(f"no queue {queue!r} on {self.nodes[0].name}")

    def wait_for_leader(self, queue: str, timeout: float = 60) -> Node:
        """Until ``queue`` has a leader among the running nodes (after an election)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                node = self.leader(queue)
                if node.alive():
                    return node
            except (LookupError, RuntimeError, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue {queue!r} has no running leader after {timeout:g} s")
            time.sleep(0.5)

    def memory_bytes(self) -> int:
        """What the first running node's Erlang VM has allocated (its whole memory, as `rabbitmqctl status`
        counts it)."""
        return int(self.ctl("eval", "erlang:memory(total).").strip())

    def disk_bytes(self) -> int:
        """What the nodes keep on disk (their data directories)."""
        return sum(p.stat().st_size for node in self.nodes for p in (node.dir / "mnesia").rglob("*") if p.is_file())

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        if os.environ.get("CHAOS_KEEP"):
            print(f"    (kept {self.root})")
            return
        shutil.rmtree(self.root, ignore_errors=True)
