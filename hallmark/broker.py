"""A real single-node Apache Kafka (KRaft) on 127.0.0.1, run from the jars Maven fetches into hallmark/kafka/lib."""
from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hallmark.config import KafkaClient
from schemas.topics import TOPICS, Topic

BROKER_DIR = Path(__file__).resolve().parent / "kafka"
LIB_DIR = BROKER_DIR / "lib"


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started."""


def fetch_jars(lib_dir: Path = LIB_DIR) -> Path:
    """Resolve the Kafka jars from Maven Central once (mvn's ~/.m2 cache makes later calls fast)."""
    if any(lib_dir.glob("kafka_2.13-*.jar")):
        return lib_dir
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerError("Maven (mvn) is not installed; it fetches the Kafka jars (apt-get install maven)")
    proc = subprocess.run([mvn, "-q", "-B", "-f", str(BROKER_DIR / "pom.xml"), "dependency:copy-dependencies",
                           f"-DoutputDirectory={lib_dir}"], capture_output=True, text=True)
    if proc.returncode != 0 or not any(lib_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"mvn could not fetch the Kafka jars:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return lib_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
"""


@dataclass
class LocalKafka:
    """One broker+controller process; everything it writes lives under `home`. `secure`: SASL/SCRAM for every
    client and ACLs (hallmark.kafka_security), with the principals' credentials in `credentials`."""

    home: Path
    port: int
    heap: str = "512m"
    secure: bool = True
    credentials: Path | None = None  # default: home/credentials

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def credentials_dir(self) -> Path:
        return self.credentials or self.home / "credentials"

    def admin(self) -> KafkaClient:
        """The operator's connection: the admin principal on a secure broker."""
        if not self.secure:
            return KafkaClient(self.bootstrap)
        from hallmark.kafka_security import ADMIN, client_for

        return client_for(self.credentials_dir, self.bootstrap, ADMIN)

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def _properties(self, controller_port: int) -> str:
        from hallmark.kafka_security import sasl_properties

        data = self.home / "data"
        listeners = sasl_properties(self.port, controller_port, self.credentials_dir) if self.secure else [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        return "\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}", *listeners,
            f"log.dirs={data}",
            # single node: internal topics cannot have more replicas than brokers, or transactions never start
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=3",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=3", "min.insync.replicas=1", "default.replication.factor=1",
            "num.partitions=3", "group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=false",
            "log.retention.check.interval.ms=300000", "num.network.threads=2", "num.io.threads=2",
            "background.threads=2", "log.cleaner.threads=1",
            "",
        ])

    def _controller_port(self) -> int:
        props = self.home / "server.properties"
        if props.exists():
            for line in props.read_text().splitlines():
                if line.startswith("controller.quorum.voters="):
                    return int(line.rsplit(":", 1)[1])
        return free_port()

    def pid(self) -> int | None:
        """The broker's pid if its process is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.port)

    def start(self, timeout: float = 300.0) -> "LocalKafka":
        """Start the broker unless it already runs; format storage the first time. Returns when it serves."""
        if self.running():
            return self
        if self.pid() is None and port_open(self.port):
            raise BrokerError(f"port {self.port} is taken by another process")
        lib = fetch_jars()
        java = shutil.which("java")
        if not java:
            raise BrokerError("Java 17 is not installed (apt-get install openjdk-17-jre-headless)")
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        props = self.home / "server.properties"
        props.write_text(self._properties(self._controller_port()))
        log4j = self.home / "log4j.properties"
        log4j.write_text(LOG4J.format(log=self.log_file))
        cp = f"{lib}/*"
        jvm = [java, f"-Xmx{self.heap}", f"-Xms{min(128, int(self.heap.rstrip('m')))}m", "-XX:+UseSerialGC",
               "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
               f"-Dlog4j.configuration=file:{log4j}", f"-Dkafka.logs.dir={self.home / 'logs'}", "-cp", cp]
        if not (self.home / "data" / "meta.properties").exists():
            from hallmark.kafka_security import format_args

            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            scram = format_args(self.credentials_dir) if self.secure else []
            proc = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                                         "-c", str(props), "--ignore-formatted", *scram],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BrokerError(f"formatting KRaft storage failed: {proc.stderr[-2000:] or proc.stdout[-2000:]}")
        out = open(self.home / "logs" / "kafka.out", "ab")
        proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc, timeout)
        return self

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"Kafka exited with {proc.returncode}; see {self.log_file}")
            if port_open(self.port) and asyncio.run(self._metadata_ok()):
                return
            time.sleep(0.5)
        self.stop()
        raise BrokerError(f"Kafka did not become ready within {timeout:.0f}s; see {self.log_file}")

    async def _metadata_ok(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.admin().aiokafka(), request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:  # not ready yet: any connection/metadata error means "try again"
            return False
        finally:
            await admin.close()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM for a controlled shutdown, SIGKILL if it does not finish in time. Idempotent."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(0.2)
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while process_alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def ensure_topics(self, topics: dict[str, Topic] | None = None) -> list[str]:
        """Create the registry's topics that do not exist yet; returns the names created."""
        return asyncio.run(ensure_topics(self.admin(), topics or TOPICS))


def process_alive(pid: int) -> bool:
    """Whether a pid still runs (reaping it first if it is our exited child)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def topic_configs(t: Topic) -> dict[str, str]:
    """A registry topic's broker settings: retention (-1 keeps forever) and compaction."""
    configs = {"retention.ms": str(t.retention_ms)}
    if t.retention_ms == -1:
        configs["retention.bytes"] = "-1"
    if t.compacted:
        configs["cleanup.policy"] = "compact"
    return configs


async def ensure_topics(client: KafkaClient | str, topics: dict[str, Topic]) -> list[str]:
    """Create missing topics with their partitions and retention (-1 keeps forever)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**KafkaClient.of(client).aiokafka(), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.values() if t.name not in existing]
        if missing:
            await admin.create_topics([
                NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, topic_configs=topic_configs(t))
                for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m hallmark.broker fetch|credentials|provision|ensure-topics` — for setup scripts and containers."""
    import argparse

    from hallmark.config import HallmarkConfig

    parser = argparse.ArgumentParser(prog="python -m hallmark.broker", description=main.__doc__)
    parser.add_argument("action", choices=("fetch", "credentials", "provision", "ensure-topics"))
    parser.add_argument("--copy-to", type=Path, help="credentials: one folder per service principal under this")
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(f"Kafka jars in {fetch_jars()}")
        return 0
    config = HallmarkConfig.from_env()
    if args.action == "credentials":
        from hallmark.compose import write_credentials

        made = write_credentials(config, args.copy_to or config.kafka_credentials / "services")
        print(f"credentials for {len(made)} principals")
        return 0
    bootstrap, client = config.kafka_bootstrap, config.operator_client()
    deadline = time.monotonic() + 120
    while True:  # in compose the broker may still be starting
        try:
            if args.action == "provision":  # topics (tenants' too), SCRAM users and ACLs
                from hallmark.stack import Stack

                Stack(config).provision()
                created = ["(provisioned)"]
            else:
                created = asyncio.run(ensure_topics(client, TOPICS))
            break
        except Exception as exc:  # connection refused / not ready yet
            if time.monotonic() > deadline:
                raise BrokerError(f"cannot create topics on {bootstrap}: {exc}") from None
            time.sleep(2)
    print(f"topics on {bootstrap}: created {', '.join(created) or 'none (all existed)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
