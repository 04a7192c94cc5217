"""Real Redis topologies on loopback for the e2e tests: a Redis Cluster (3 primaries, each with a replica),
a primary + replica watched by 3 Sentinels, a TLS-only Redis (test CA made by `openssl` here), and a Redis
that requires a password. 127.0.0.1 only, free ports, temp dirs; every process a fixture starts is killed
when the test ends, even when it fails."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import wait_for

PREFIX = "{tq}"  # the hash tag: every key of the deployment in one slot
SLOT = key_slot(PREFIX.encode())
SENTINEL_SERVICE = "mymaster"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(count: int, bus: bool = False) -> list[int]:
    """`count` distinct free ports; with `bus`, port + 10000 (the Cluster bus) is free as well."""
    found: list[int] = []
    while len(found) < count:
        port = random.randint(20000, 30000)
        if port in found or (port + 10000) in found or not _port_free(port):
            continue
        if bus and not _port_free(port + 10000):
            continue
        found.append(port)
    return found


def _require(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")


@dataclass
class Node:
    """One redis-server (or Sentinel) process of a topology: it may be killed and restarted."""

    port: int
    dir: Path
    args: list[str] = field(default_factory=list)  # after the common ones
    conf: Path | None = None  # a config file (Sentinel needs a writable one)
    client_kwargs: dict[str, Any] = field(default_factory=dict)  # to reach it: ssl_* files, username, password
    process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Node:
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = ["redis-server", *([str(self.conf)] if self.conf else [])]
        cmd += ["--bind", "127.0.0.1", "--dir", str(self.dir), "--daemonize", "no", "--save", ""]
        cmd += ["--logfile", str(self.dir / "redis.log"), *self.args]
        quiet = subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, stdin=quiet, stdout=quiet, stderr=quiet)
        if wait:
            self.wait_up()
        return self

    def wait_up(self) -> None:
        wait_for(self.ping, timeout=10, what=f"redis on port {self.port} ({self.dir.name})")

    def client(self, timeout: float = 2.0) -> Any:
        """A plain client to this one node (typed Any: redis-py's reply unions add nothing to a test)."""
        return redis.Redis(port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout, **self.client_kwargs)

    def ping(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"redis on port {self.port} exited; see {self.dir / 'redis.log'}")
        try:
            with self.client(0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            found: dict[str, Any] = client.info(section)
            return found

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown, no final fsync)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


class Topology:
    """Owns its nodes: `close()` kills every one of them."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()


# ---- Redis Cluster -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeState:
    id: str
    port: int
    primary: bool
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]
    failed: bool


class Cluster(Topology):
    """3 primaries with one replica each (6 nodes), `--cluster-replicas 1`, AOF with appendfsync always."""

    def __init__(self, root: Path, shards: int = 3) -> None:
        super().__init__()
        for port in free_ports(shards * 2, bus=True):
            self.add(
                Node(
                    port,
                    root / f"node{port}",
                    [
                        "--port",
                        str(port),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "always",
                        "--repl-diskless-sync-delay",
                        "0",  # a replica syncs at once, not after the default 5 s
                    ],
                )
            )

    def create(self) -> Cluster:
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_up()
        replicas = ["--cluster-replicas", "1", "--cluster-yes"]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes), *replicas],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def view(self, node: Node | None = None) -> list[ClusterNodeState]:
        """`CLUSTER NODES` as seen by one live node."""
        node = node or next(n for n in self.nodes if n.process is not None)
        with node.client() as client:
            text = client.execute_command("CLUSTER", "NODES")
        text = text.decode() if isinstance(text, bytes) else text
        found = []
        for line in text.strip().splitlines():
            parts = line.split()
            flags = parts[2].split(",")
            slots = []
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue  # a slot being migrated
                low, _, high = spec.partition("-")
                slots.append((int(low), int(high or low)))
            found.append(
                ClusterNodeState(
                    id=parts[0],
                    port=int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                    primary="master" in flags,
                    primary_id=None if parts[3] == "-" else parts[3],
                    slots=tuple(slots),
                    failed="fail" in flags or "fail?" in flags,
                )
            )
        return found

    def owner(self, slot: int = SLOT) -> Node:
        """The primary serving `slot` (the {tq} slot by default)."""
        port = self.owner_port(slot)
        assert port, f"no live primary serves slot {slot}"
        return self.node(port)

    def owner_port(self, slot: int = SLOT) -> int | None:
        """Port of the primary serving `slot`; None while it is failed and not yet replaced."""
        for state in self.view():
            if state.primary and not state.failed and any(lo <= slot <= hi for lo, hi in state.slots):
                return state.port
        return None

    def replica_of(self, primary: Node) -> Node:
        states = self.view()
        primary_id = next(s.id for s in states if s.port == primary.port)
        return next(self.node(s.port) for s in states if s.primary_id == primary_id and not s.failed)

    def _healthy(self) -> bool:
        for node in self.nodes:
            if node.process is None:
                continue
            info = node.client().execute_command("CLUSTER", "INFO")
            info = info.decode() if isinstance(info, bytes) else info
            if "cluster_state:ok" not in info:
                return False
            states = self.view(node)
            live = [n.port for n in self.nodes if n.process is not None]
            if any(s.failed for s in states if s.port in live):
                return False
            if sum(1 for s in states if s.primary and s.slots) != len(self.nodes) // 2:
                return False
            repl = node.info("replication")
            if repl["role"] == "slave" and repl.get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(self, timeout: float = 20.0) -> None:
        wait_for(self._healthy, timeout=timeout, interval=0.05, what="cluster_state:ok on every node, replicas in sync")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    _require("redis-server")
    _require("redis-cli")
    topology = Cluster(tmp_path / "cluster")
    try:
        yield topology.create()
    finally:
        topology.close()


# ---- Sentinel ------------------------------------------------------------------------------------


SENTINEL_DATA_PASSWORD = "d4ta-n0de-secret"


class SentinelSet(Topology):
    """A primary, one replica, and 3 Sentinels (quorum 2) watching them as `mymaster`. The data nodes require
    SENTINEL_DATA_PASSWORD (the Sentinels themselves do not)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        p, r, *sentinel_ports = free_ports(5)
        data = ["--appendonly", "yes", "--appendfsync", "always", "--repl-diskless-sync-delay", "0"]
        data += ["--requirepass", SENTINEL_DATA_PASSWORD, "--masterauth", SENTINEL_DATA_PASSWORD]
        login = {"password": SENTINEL_DATA_PASSWORD}
        # Replication is asynchronous: once its replica is promoted, the old primary would go on accepting
        # writes (then discarded) until the Sentinels demote it, ~10 s later. min-replicas-to-write makes it
        # refuse them as soon as its replica leaves. On the first primary only: with a single replica, the
        # promoted one would refuse every write until the old primary rejoins as its replica (production sets
        # it everywhere, with two replicas or more).
        safe = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"]
        self.primary = self.add(Node(p, root / "primary", ["--port", str(p), *data, *safe], client_kwargs=login))
        follow = ["--replicaof", "127.0.0.1", str(p)]
        self.replica = self.add(Node(r, root / "replica", ["--port", str(r), *follow, *data], client_kwargs=login))
        self.sentinels = []
        for port in sentinel_ports:
            folder = root / f"sentinel{port}"
            folder.mkdir(parents=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\n"
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {p} 2\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
                f"sentinel auth-pass {SENTINEL_SERVICE} {SENTINEL_DATA_PASSWORD}\n"
            )
            self.sentinels.append(self.add(Node(port, folder, ["--sentinel"], conf=conf)))

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start(wait=False)
        for sentinel in self.sentinels:
            sentinel.wait_up()
        wait_for(self._ready, timeout=20, interval=0.05, what="Sentinels agreeing on the primary and its replica")
        return self

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def primary_port(self) -> int:
        """The primary as the Sentinels see it (all must agree)."""
        ports = set()
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                _, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
                ports.add(int(port))
        return ports.pop() if len(ports) == 1 else -1

    def _ready(self) -> bool:
        if self.replica.info("replication").get("master_link_status") != "up":
            return False
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                replicas = client.sentinel_slaves(SENTINEL_SERVICE)
                others = client.sentinel_sentinels(SENTINEL_SERVICE)
            if len(replicas) != 1 or len(others) != len(self.sentinels) - 1:
                return False
            if replicas[0]["flags"] != "slave":  # not s_down, not disconnected
                return False
        return self.primary_port() == self.primary.port

    def failover(self) -> Node:
        """`SENTINEL FAILOVER` (forced, no agreement needed); returns the new primary once all agree."""
        old = self.primary_port()
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", SENTINEL_SERVICE)
        wait_for(lambda: self.primary_port() not in (old, -1), timeout=20, what="the Sentinels to agree on a primary")
        return self.primary if self.primary_port() == self.primary.port else self.replica


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    _require("redis-server")
    topology = SentinelSet(tmp_path / "sentinel")
    try:
        yield topology.start()
    finally:
        topology.close()


# ---- TLS and AUTH --------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(folder: Path, name: str, ca: str, subject: str, extensions: str) -> None:
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-new", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=folder)
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip


def make_certs(folder: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate it signed (valid one day), and
    another CA that signed nothing here (for the wrong-CA test)."""
    _require("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "1", "-subj", f"/CN=taskqueue test {ca}",
            cwd=folder,
        )  # fmt: skip
    _issue(folder, "server", "ca", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _issue(folder, "client", "ca", "/CN=taskqueue-client", "extendedKeyUsage=clientAuth\n")
    return {name: folder / f"{name}.{ext}" for name in ("ca", "other-ca", "server", "client") for ext in ("crt",)} | {
        "client-key": folder / "client.key",
        "server-key": folder / "server.key",
    }


class TlsRedis(Topology):
    """A Redis that speaks TLS only (`--port 0`) and requires client certificates (mutual TLS)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.certs = make_certs(root / "certs")
        (port,) = free_ports(1)
        args = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.certs["server"])]
        args += ["--tls-key-file", str(self.certs["server-key"]), "--tls-ca-cert-file", str(self.certs["ca"])]
        tls = {
            "ssl": True,
            "ssl_ca_certs": str(self.certs["ca"]),
            "ssl_certfile": str(self.certs["client"]),
            "ssl_keyfile": str(self.certs["client-key"]),
        }
        self.server = self.add(Node(port, root / "tls", args, client_kwargs=tls))

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.server.port}/0"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    _require("redis-server")
    topology = TlsRedis(tmp_path)
    try:
        topology.server.start()
        yield topology
    finally:
        topology.close()


AUTH_USER, AUTH_PASSWORD = "tqrunner", "s3cret-Pa55-word-9f1c"


class AuthRedis(Topology):
    """A Redis whose default user is off: only the ACL user `AUTH_USER` with `AUTH_PASSWORD` may connect."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        (port,) = free_ports(1)
        acl = ["--user", "default", "off", "--user", AUTH_USER, "on", f">{AUTH_PASSWORD}", "~*", "&*", "+@all"]
        login = {"username": AUTH_USER, "password": AUTH_PASSWORD}
        self.server = self.add(Node(port, root / "auth", ["--port", str(port), *acl], client_kwargs=login))

    @property
    def url(self) -> str:
        return f"redis://{AUTH_USER}:{AUTH_PASSWORD}@127.0.0.1:{self.server.port}/0"


@pytest.fixture
def auth_redis(tmp_path: Path) -> Iterator[AuthRedis]:
    _require("redis-server")
    topology = AuthRedis(tmp_path)
    try:
        topology.server.start()
        yield topology
    finally:
        topology.close()
