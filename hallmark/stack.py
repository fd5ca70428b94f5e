"""The local stack as processes: the broker, one process per stage, the web servers. Pid files under var/run."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hallmark.broker import LocalKafka, ensure_topics, port_open, process_alive
from hallmark.config import HallmarkConfig, Ports, process_env
from schemas.topics import TOPICS
from streams.run import STAGES


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    port: int | None = None  # web servers: ready when it listens
    principal: str = ""  # its Kafka principal; "" = no broker access (the public verification server)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else ""


def hallmark_argv(*args: str) -> tuple[str, ...]:
    """`hallmark …` with this interpreter (`python -m hallmark.cli` would load the CLI module twice)."""
    return (sys.executable, "-c", "import sys; from hallmark.cli import main; sys.exit(main())", *args)


def web_services(ports: Ports) -> list[Service]:
    from streams.acls import API, CONSOLE

    services = [Service("api", (sys.executable, "-m", "streams.api", "--port", str(ports.api)), ports.api, API),
                Service("verify", hallmark_argv("provenance", "serve", "--port", str(ports.verify)), ports.verify)]
    if importlib.util.find_spec("review_ui.cli") is not None:  # the reviewer console, once it exists
        services.append(Service("review-ui", hallmark_argv("review", "serve", "--port", str(ports.review)),
                                ports.review, CONSOLE))
    return services


def stage_services() -> list[Service]:
    from streams.acls import stage_principal

    return [Service(name, (sys.executable, "-m", "streams.run", name), principal=stage_principal(name))
            for name in STAGES]


@dataclass
class Stack:
    settings: HallmarkConfig

    @property
    def ports(self) -> Ports:
        return self.settings.ports

    @property
    def run_dir(self) -> Path:
        return self.settings.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.settings.home / "logs"

    def kafka(self) -> LocalKafka:
        host, port = self.settings.kafka_bootstrap.rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"HALLMARK_KAFKA={self.settings.kafka_bootstrap} is not local; start that broker yourself")
        return LocalKafka(self.settings.home / "kafka", int(port), secure=self.settings.kafka_secure,
                          credentials=self.settings.kafka_credentials)

    def env(self, service: Service) -> dict[str, str]:
        return process_env(replace(self.settings, kafka_principal=service.principal))

    def provision(self) -> None:
        """Topics (the registry's and every tenant's), each principal's credentials and ACLs; idempotent."""
        from hallmark.tenants import TenantRegistry
        from streams.acls import grants

        admin = self.settings.operator_client()
        tenants = list(TenantRegistry.load(self.settings.tenants_file).tenants.values())
        topics = {**TOPICS, **{t.topic: replace(TOPICS["requests"], name=t.topic) for t in tenants}}
        asyncio.run(ensure_topics(admin, topics))
        if self.settings.kafka_secure:
            from hallmark.kafka_security import apply_grants

            apply_grants(admin, self.settings.kafka_credentials, grants(tenants))

    def pid(self, name: str) -> int | None:
        try:
            pid = int((self.run_dir / f"{name}.pid").read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def start(self, service: Service) -> bool:
        """Start one process unless it runs already; False when it was running."""
        if self.pid(service.name):
            return False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"{service.name}.ready").unlink(missing_ok=True)
        with open(self.log_dir / f"{service.name}.log", "ab") as log:
            proc = subprocess.Popen(service.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env(service), start_new_session=True)
        (self.run_dir / f"{service.name}.pid").write_text(str(proc.pid))
        return True

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def ready(self, service: Service) -> bool:
        if service.port:
            return port_open(service.port)
        return (self.run_dir / f"{service.name}.ready").exists()

    def wait_ready(self, services: list[Service], timeout: float = 300.0) -> list[str]:
        """Names of the services not ready (or dead) when the timeout ran out."""
        deadline = time.monotonic() + timeout
        waiting = list(services)
        while waiting and time.monotonic() < deadline:
            waiting = [s for s in waiting if not self.ready(s) and self.pid(s.name)]
            if waiting:
                time.sleep(0.3)
        return [s.name for s in services if not self.ready(s)]

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> bool:
        """Stop one process (SIGKILL after `timeout`); False when it was not running."""
        return bool(self.stop_all([name], sig, timeout))

    def stop_all(self, names: list[str], sig: int = signal.SIGTERM, timeout: float = 20.0) -> list[str]:
        """Signal every running one at once, then wait (SIGKILL stragglers); returns the names that ran."""
        pids = {}
        for name in names:
            pid = self.pid(name)
            if pid is None:
                (self.run_dir / f"{name}.pid").unlink(missing_ok=True)  # stale
                continue
            os.killpg(pid, sig)
            pids[name] = pid
        deadline = time.monotonic() + timeout
        while any(process_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for name, pid in pids.items():
            if process_alive(pid):
                os.killpg(pid, signal.SIGKILL)
                while process_alive(pid):
                    time.sleep(0.05)
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
            (self.run_dir / f"{name}.ready").unlink(missing_ok=True)
        return list(pids)

    def restart_readers_of_requests(self) -> list[str]:
        """Restart the running stages that consume `requests` (they subscribe to every tenant's topic at start)."""
        from streams.run import stage_class

        names = [s.name for s in stage_services() if "requests" in stage_class(s.name).sources and self.pid(s.name)]
        self.stop_all(names)
        for service in stage_services():
            if service.name in names:
                self.start(service)
        return names

    def up(self, stages: list[Service] | None = None, web: list[Service] | None = None,
           with_kafka: bool = True) -> dict[str, str]:
        """Broker, topics, stages, web servers; idempotent. Returns name → where it listens / what it is."""
        where = {}
        if with_kafka:
            kafka = self.kafka().start()
            where["kafka"] = kafka.bootstrap
        self.provision()
        stages = stage_services() if stages is None else stages
        web = web_services(self.ports) if web is None else web
        for service in stages + web:
            self.start(service)
        late = self.wait_ready(stages + web)
        if late:
            tails = "".join(f"\n--- {name}.log (last lines) ---\n{self.log_tail(name)}" for name in late)
            raise RuntimeError(f"not ready: {', '.join(late)}; see {self.log_dir}/<name>.log{tails}")
        where.update({s.name: s.url() or f"stage (consumer group hallmark-{s.name})" for s in stages + web})
        return where

    def down(self, with_kafka: bool = True) -> list[str]:
        """Stop everything this stack started (web servers and stages first, the broker last)."""
        stopped = self.stop_all([s.name for s in web_services(self.ports)] + list(STAGES))
        kafka = self.kafka()
        if with_kafka and kafka.pid():
            kafka.stop()
            stopped.append("kafka")
        return stopped
