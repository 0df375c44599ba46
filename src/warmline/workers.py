"""`warmline serve --workers N`: N full nodes on one host, one per core, behind Kamailio.

Python runs one core per process, so a host with N cores runs N warmline
processes. Each is a whole node (its own UA core, calls, API, records folder)
on its own SIP port (base, base+1, ...), its own HTTP port (likewise) and its
own slice of the media ports, so nothing is shared between them but the
records database (PostgreSQL for KPIs across nodes). Kamailio in front (the
shipped deploy/kamailio/warmline.cfg) spreads new calls over them by Call-ID
and keeps every request of a dialog on the node that answered it.

Why not one port shared with SO_REUSEPORT: the kernel picks a socket by a hash
of the 4-tuple (source and destination address and port), not by Call-ID, so
the BYE of a call can reach another worker than its INVITE whenever it comes
from another address or port (a proxy's other process, a second carrier
edge, a phone that moved). A SIP-aware proxy is what keeps a dialog on one
worker (docs/deploy.md).

The supervisor here re-runs the same command line once per worker with that
worker's ports and records folder (flags win over the config file), restarts a
worker that dies (at most once per RESTART_BACKOFF seconds each), passes
SIGTERM/SIGINT on (and waits for the workers' graceful shutdown) and SIGUSR1
(drain) on to every worker; after a drain a worker that exits cleanly
(--exit-when-drained) stays down, and the supervisor exits with the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from warmline.settings import ServeSettings
from warmline.transport.listen import ListenSpec

log = logging.getLogger("warmline.workers")
RESTART_BACKOFF = 1.0  # seconds before a dead worker is started again
STOP_GRACE = 15.0  # seconds a worker has to hang up and exit after SIGTERM
# flags the supervisor sets per worker, removed from the command line it was given
_PER_WORKER = ("--workers", "--sip", "--http", "--media-ports", "--records")


@dataclass(frozen=True)
class WorkerPlan:
    """What worker ``index`` of ``count`` listens on, and where it keeps its records."""

    index: int
    listen: tuple[ListenSpec, ...]
    http: str | None  # HOST:PORT
    media_ports: range
    records: Path

    @property
    def sip_uris(self) -> list[str]:
        """How Kamailio's dispatcher list names this worker (one per listener)."""
        return [_uri(spec) for spec in self.listen]


def plan_workers(settings: ServeSettings, count: int) -> list[WorkerPlan]:
    """Ports base+i for SIP and HTTP; the media range cut in ``count`` even slices.

    ValueError when the media range is too small to give each worker room."""
    if count < 1:
        raise ValueError("workers: at least 1")
    ports = settings.media_ports
    size = (len(ports) // count) & ~1  # RTP on even ports, RTCP on the odd one after
    if size < 4:
        raise ValueError(f"media ports {ports.start}-{ports.stop} are too few for {count} "
                         "workers (at least 4 each)")
    start = ports.start + (ports.start & 1)
    return [WorkerPlan(
        index,
        tuple(_offset(spec, index) for spec in settings.listen),
        f"{settings.http.host}:{settings.http.port + index}" if settings.http else None,
        range(start + index * size, start + (index + 1) * size),
        settings.records / f"worker-{index}") for index in range(count)]


def _offset(spec: ListenSpec, index: int) -> ListenSpec:
    """The listener ``index`` ports up (an advertised port too: NAT forwards each)."""
    if spec.port == 0:
        raise ValueError("workers: give the SIP listener a port (base+N each), not 0")
    advertised = spec.advertise_port + index if spec.advertise_port is not None else None
    return replace(spec, port=spec.port + index, advertise_port=advertised)


def _uri(spec: ListenSpec) -> str:
    host, port = spec.public
    host = f"[{host}]" if ":" in host else host
    suffix = "" if spec.transport == "udp" else f";transport={spec.transport}"
    return f"sip:{host}:{port}{suffix}"


def dispatcher_list(plans: Sequence[WorkerPlan], setid: int = 1) -> str:
    """Kamailio's dispatcher list file for these workers (deploy/kamailio/dispatcher.list)."""
    lines = ["# setid destination flags priority attrs (warmline serve --workers)"]
    for plan in plans:
        uri = plan.sip_uris[0]
        lines.append(f"{setid} {uri} 0 0 duid=worker{plan.index}")
    return "\n".join(lines) + "\n"


def worker_argv(argv: Sequence[str], plan: WorkerPlan) -> list[str]:
    """``argv`` (serve's own command line) with the per-worker flags replaced."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _PER_WORKER:
            skip = "=" not in arg
            continue
        kept.append(arg)
    extra = ["--workers", "1", "--records", str(plan.records), "--media-ports",
             f"{plan.media_ports.start}-{plan.media_ports.stop}"]
    for spec in plan.listen:
        extra += ["--sip", str(spec)]
    if plan.http is not None:
        extra += ["--http", plan.http]
    return [*kept, *extra]


class Supervisor:
    """Runs one process per plan, restarts the dead, passes signals on."""

    def __init__(self, plans: Sequence[WorkerPlan], argv: Sequence[str],
                 env: dict[str, str] | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "warmline"),
                 backoff: float = RESTART_BACKOFF) -> None:
        self.backoff = backoff  # seconds before a dead worker is started again
        self.command = list(command)  # what runs a worker, before its arguments
        self.plans = list(plans)
        self.argv = list(argv)
        self.env = env or dict(os.environ)
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self.draining = False  # SIGUSR1 passed on: workers leaving cleanly stay gone
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Until SIGTERM/SIGINT (or, after a drain, every worker gone): start every
        worker, keep them up; then stop them."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGUSR1, self.drain)
        keepers = asyncio.create_task(self._keep_all())
        stopping = asyncio.create_task(self._stop_asked())
        await asyncio.wait({keepers, stopping}, return_when=asyncio.FIRST_COMPLETED)
        self._stopping.set()
        log.info("stopping %d worker(s)", len(self.processes))
        await keepers
        await stopping
        return 0

    async def _keep_all(self) -> None:
        await asyncio.gather(*(self._keep(plan) for plan in self.plans))

    async def _stop_asked(self) -> None:
        await self._stopping.wait()

    def drain(self) -> None:
        """SIGUSR1 to every worker; from now on a worker that exits 0 (drained, with
        --exit-when-drained) is not started again."""
        self.draining = True
        self._pass_on(signal.SIGUSR1)

    def stop(self) -> None:
        self._stopping.set()

    def _pass_on(self, signum: int) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def _keep(self, plan: WorkerPlan) -> None:
        """Worker ``plan.index`` up until stopping; a dead one started again."""
        while not self._stopping.is_set():
            process = await self._start(plan)
            code = await self._wait(process)
            if self._stopping.is_set() or (self.draining and code == 0):
                return
            self.restarts += 1
            log.warning("worker %d (PID %d) exited with %s: starting it again in %.1f s",
                        plan.index, process.pid, code, self.backoff)
            try:
                await asyncio.wait_for(self._stopping.wait(), self.backoff)
            except TimeoutError:
                continue

    async def _start(self, plan: WorkerPlan) -> asyncio.subprocess.Process:
        plan.records.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            *self.command, *worker_argv(self.argv, plan), env=self.env)
        self.processes[plan.index] = process
        log.info("worker %d (PID %d): SIP %s, HTTP %s, media %d-%d", plan.index, process.pid,
                 " ".join(plan.sip_uris), plan.http or "-", plan.media_ports.start,
                 plan.media_ports.stop)
        return process

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        """Its exit status; once stopping, SIGKILL after STOP_GRACE seconds."""
        waiting = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():  # stopping: the worker hangs up its calls and exits
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(waiting), STOP_GRACE)
            except TimeoutError:
                log.warning("worker PID %d still up %.0f s after SIGTERM: killed", process.pid,
                            STOP_GRACE)
                process.kill()
        stopping.cancel()
        return await waiting


def run_workers(settings: ServeSettings, argv: Sequence[str]) -> int:
    """The supervisor's main: plan, print the dispatcher list, run until stopped."""
    plans = plan_workers(settings, settings.workers)
    log.info("%d workers; Kamailio's dispatcher list for them:\n%s", len(plans),
             dispatcher_list(plans))
    env = dict(os.environ)
    if settings.api_token:  # one token for every worker (a generated one too)
        env["WARMLINE_API_TOKEN"] = settings.api_token
    return asyncio.run(Supervisor(plans, argv, env).run())
