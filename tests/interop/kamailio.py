"""A real Kamailio around warmline, no database: a dispatching proxy, or a registrar/PBX.

    with kamailio(tmp_path, ["sip:127.0.0.1:5071", "sip:127.0.0.1:5072"]) as proxy:
        ...call sip:ai@{proxy.host}:{proxy.port}; proxy.traces(), proxy.tm_stats()

    account = PbxAccount("pbx.test", "warmline", "s3cret", human="sip:human@127.0.0.1:5080")
    with kamailio_registrar(tmp_path, account) as pbx:
        ...warmline registers as warmline@pbx.test; pbx.traces("register"), pbx.location()

The configs (examples/kamailio/*.cfg, their markers filled in) are rendered per test and are
also the layout we document for operators: `record_route()` on requests that
create a dialog, `loose_route()` for the requests inside one, the dispatcher
spreading initial INVITEs round-robin over the warmline instances of a plain
list file and failing over to the next one on 408/500/503 or no answer.

Kamailio runs in the foreground (`-DD -E`) under `timeout`, in its own process
group, and is stopped by PID (SIGTERM, then SIGKILL of its group after a bound).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.interop.peers import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kamailio"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kamailio"

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"

CONFIG = (EXAMPLES / "dispatcher.cfg").read_text()  # the operators' example too

REGISTRAR_CONFIG = (EXAMPLES / "registrar.cfg").read_text()

SHIPPED_CONFIG = (DEPLOY / "warmline.cfg").read_text()  # what operators run (docs/deploy.md)


@dataclass(frozen=True)
class Trace:
    """One WLTRACE line: a request Kamailio routed (or, as a registrar, answered)."""

    # proxy: "initial", "in-dialog", "failover", "no-route", "no-backend";
    # registrar: "register", "human", "initial", "not-registered", "in-dialog", "reply"
    kind: str
    fields: dict[str, str]

    @property
    def method(self) -> str:
        return self.fields.get("method", "")

    @property
    def outcome(self) -> str:
        """register/human: "challenged", "saved", "relayed", "save-failed"."""
        return self.fields.get("outcome", "")

    @property
    def source_port(self) -> int:
        return int(self.fields.get("src", "0:0").rsplit(":", 1)[1])


_TRACE = re.compile(r"WLTRACE (\S+) (.*)$")
_FIELD = re.compile(r"(\w+)=(\S*)")


@dataclass(frozen=True)
class Binding:
    """One contact bound at the registrar (kamcmd ul.dump)."""

    aor: str
    contact: str
    expires: int  # seconds left
    cseq: int  # of the REGISTER that last refreshed it
    call_id: str
    last_modified: int  # unix time of that REGISTER


@dataclass
class Kamailio:
    host: str
    port: int
    rundir: Path
    config: Path
    list_file: Path | None  # the dispatcher's (proxy); None for the registrar
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"

    @property
    def record_route(self) -> str:
        """The Record-Route entry this proxy inserts (also the Route that reaches it)."""
        return f"<sip:{self.host}:{self.port};lr>"

    @property
    def ctl_socket(self) -> str:
        return f"unix:{self.rundir}/kamailio_ctl"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def traces(self, kind: str | None = None) -> list[Trace]:
        """The requests Kamailio routed (trace=True), in the order it logged them."""
        found = []
        for line in self.log().splitlines():
            match = _TRACE.search(line)
            if match and (kind is None or match.group(1) == kind):
                found.append(Trace(match.group(1), dict(_FIELD.findall(match.group(2)))))
        return found

    def rpc(self, *command: str, timeout: float = 5.0) -> str:
        """A kamcmd command over the ctl socket (e.g. "tm.stats", "dispatcher.list")."""
        result = subprocess.run([KAMCMD, "-s", self.ctl_socket, *command], capture_output=True,
                                text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise AssertionError(f"kamcmd {' '.join(command)}: {result.stderr or result.stdout}")
        return result.stdout

    def tm_stats(self) -> dict[str, int]:
        """tm.stats as numbers: total, created, 2xx, 4xx, 5xx, 6xx, rpl_sent, ..."""
        return {key: int(value) for key, value in
                re.findall(r"^\s*(\w+):\s*(\d+)\s*$", self.rpc("tm.stats"), re.MULTILINE)}

    def dispatcher_flags(self) -> dict[str, str]:
        """Each destination URI with its state flags ("AP" active, "IP" inactive+probing)."""
        text = self.rpc("dispatcher.list")
        return dict(re.findall(r"URI:\s*(\S+)\s+FLAGS:\s*(\w+)", text))

    def location(self) -> list[Binding]:
        """The registrar's bindings now (usrloc in memory), from `kamcmd ul.dump`."""
        bindings = []
        for aor, block in re.findall(r"AoR:\s*(\S+)(.*?)(?=AoR:|\Z)", self.rpc("ul.dump"),
                                     re.DOTALL):
            for contact in re.split(r"\bContact:\s*\{", block)[1:]:
                field = dict(re.findall(r"^\s*([\w-]+):\s*(.*?)\s*$", contact, re.MULTILINE))
                bindings.append(Binding(aor, field["Address"], int(field["Expires"]),
                                        int(field["CSeq"]), field["Call-ID"],
                                        int(field.get("Last-Modified", "0"))))
        return bindings


def render_config(host: str, port: int, list_file: Path, ctl_socket: str, *,
                  fr_timer_ms: int = 1000, debug: int = 2, trace: bool = True) -> str:
    values = {"HOST": host, "PORT": str(port), "LIST_FILE": str(list_file),
              "CTL_SOCKET": ctl_socket, "FR_TIMER_MS": str(fr_timer_ms), "DEBUG": str(debug),
              "TRACE_DEFINE": "#!define WITH_TRACE" if trace else "# (tracing off)"}
    text = CONFIG
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    assert "@@" not in text, "unrendered marker left in the Kamailio config"
    return text


def render_shipped_config(host: str, port: int, list_file: Path, ctl_socket: str, *,
                          fr_timer_ms: int = 1000, ping_interval: int = 1, debug: int = 2,
                          trace: bool = True, flood_density: int = 60,
                          flood_exempt: str = "127.0.0.0/8") -> str:
    """deploy/kamailio/warmline.cfg with the lines of its "Edit for your deployment" block
    rewritten, exactly as an operator edits them (each line must be there exactly once)."""
    lines = {
        r'#!define WL_DISPATCHER_LIST ".*"': f'#!define WL_DISPATCHER_LIST "{list_file}"',
        r'#!define WL_CTL_SOCKET ".*"': f'#!define WL_CTL_SOCKET "unix:{ctl_socket}"',
        r"#!define WL_FR_TIMER \d+": f"#!define WL_FR_TIMER {fr_timer_ms}",
        r"#!define WL_PING_INTERVAL \d+": f"#!define WL_PING_INTERVAL {ping_interval}",
        r'#!define WL_PING_FROM ".*"': f'#!define WL_PING_FROM "sip:kamailio@{host}"',
        r"##!define WITH_TRACE": "#!define WITH_TRACE" if trace else "##!define WITH_TRACE",
        r"#!define WL_FLOOD_DENSITY \d+": f"#!define WL_FLOOD_DENSITY {flood_density}",
        r'#!define WL_FLOOD_EXEMPT ".*"': f'#!define WL_FLOOD_EXEMPT "{flood_exempt}"',
        r"debug=\d+": f"debug={debug}",
        r"listen=udp:\S+": f"listen=udp:{host}:{port}",
    }
    text = SHIPPED_CONFIG
    for pattern, line in lines.items():
        text, count = re.subn(rf"^{pattern}$", line.replace("\\", "\\\\"), text,
                              flags=re.MULTILINE)
        assert count == 1, f"deploy/kamailio/warmline.cfg: {pattern!r} found {count} times"
    return text


def options_ping(host: str, port: int, timeout: float = 0.3) -> bool:
    """True if an OPTIONS to the proxy itself gets a 200 (its liveness probe)."""
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        local = sock.getsockname()[1]
        probe = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP {host}:{local};branch={branch};rport\r\n"
                 f"From: <sip:probe@{host}:{local}>;tag=probe\r\nTo: <sip:{host}:{port}>\r\n"
                 f"Call-ID: {uuid.uuid4().hex}@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                 "Content-Length: 0\r\n\r\n").encode()
        sock.settimeout(timeout)
        sock.sendto(probe, (host, port))
        try:
            return sock.recv(65535).startswith(b"SIP/2.0 200")
        except (TimeoutError, ConnectionRefusedError):
            return False


@dataclass(frozen=True)
class PbxAccount:
    """The one account of a registrar config: who registers, and the human behind it."""

    domain: str  # the realm, an alias of the registrar, what a trunk's uri names
    username: str
    password: str = field(repr=False)
    human: str | None = None  # where INVITEs to human_user@domain go (a phone's URI)
    human_user: str = "human"

    @property
    def aor(self) -> str:
        return f"sip:{self.username}@{self.domain}"

    @property
    def human_aor(self) -> str:
        return f"sip:{self.human_user}@{self.domain}"


def render_registrar_config(host: str, port: int, account: PbxAccount, ctl_socket: str, *,
                            max_expires: int = 6, debug: int = 2, trace: bool = True) -> str:
    for name, value in (("password", account.password), ("username", account.username),
                        ("domain", account.domain), ("human", account.human or "")):
        if re.search(r'["\\\s$]', value):  # a Kamailio string literal; $ would be a variable
            raise ValueError(f"{name}: no quotes, backslashes, blanks or $ in a test config")
    values = {"HOST": host, "PORT": str(port), "CTL_SOCKET": ctl_socket,
              "DOMAIN": account.domain, "USERNAME": account.username,
              "PASSWORD": account.password, "HUMAN_USER": account.human_user,
              "HUMAN_URI": account.human or "sip:nobody.invalid",
              "MAX_EXPIRES": str(max_expires), "DEBUG": str(debug),
              "TRACE_DEFINE": "#!define WITH_TRACE" if trace else "# (tracing off)",
              "HUMAN_DEFINE": "#!define WITH_HUMAN" if account.human else "# (no human)"}
    text = REGISTRAR_CONFIG
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    assert "@@" not in text, "unrendered marker left in the Kamailio config"
    return text


@contextlib.contextmanager
def kamailio(workdir: Path, backends: list[str], *, host: str = "127.0.0.1",
             fr_timer_ms: int = 1000, debug: int = 2, trace: bool = True,
             lifetime: float = 60.0, start_timeout: float = 10.0) -> Iterator[Kamailio]:
    """Kamailio on ``host``:<free port> (UDP) dispatching to ``backends`` (SIP URIs, set 1).

    Bounded: `timeout` ends it after ``lifetime`` seconds whatever happens; on exit it
    gets SIGTERM by PID, and its process group SIGKILL if it is still there 5 s later.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    list_file = workdir / "dispatcher.list"
    list_file.write_text("# setid destination [flags priority attrs]\n" + "".join(
        f"1 {uri} 0 0 duid=warmline{n}\n" for n, uri in enumerate(backends, 1)))

    def render(port: int, ctl_socket: str) -> str:
        return render_config(host, port, list_file, ctl_socket, fr_timer_ms=fr_timer_ms,
                             debug=debug, trace=trace)

    with _running(workdir, host, render, list_file, lifetime, start_timeout) as proxy:
        yield proxy


@contextlib.contextmanager
def shipped_kamailio(workdir: Path, backends: list[str], *, host: str = "127.0.0.1",
                     fr_timer_ms: int = 1000, ping_interval: int = 1, debug: int = 2,
                     trace: bool = True, lifetime: float = 60.0, children: int | None = None,
                     shm_mb: int = 64, start_timeout: float = 10.0, flood_density: int = 60,
                     flood_exempt: str = "127.0.0.0/8") -> Iterator[Kamailio]:
    """The shipped deploy/kamailio/warmline.cfg (hash on Call-ID, OPTIONS probing every
    ``ping_interval`` s) on ``host``:<free port> in front of ``backends``. Bounded and
    stopped like :func:`kamailio`."""
    workdir.mkdir(parents=True, exist_ok=True)
    list_file = workdir / "dispatcher.list"
    list_file.write_text("# setid destination [flags priority attrs]\n" + "".join(
        f"1 {uri} 0 0 duid=warmline{n}\n" for n, uri in enumerate(backends, 1)))

    def render(port: int, ctl_socket: str) -> str:
        text = render_shipped_config(host, port, list_file, ctl_socket, fr_timer_ms=fr_timer_ms,
                                     ping_interval=ping_interval, debug=debug, trace=trace,
                                     flood_density=flood_density, flood_exempt=flood_exempt)
        return text if children is None else text.replace("children=4", f"children={children}")

    with _running(workdir, host, render, list_file, lifetime, start_timeout,
                  shm_mb=shm_mb) as proxy:
        yield proxy


@contextlib.contextmanager
def kamailio_registrar(workdir: Path, account: PbxAccount, *, host: str = "127.0.0.1",
                       max_expires: int = 6, debug: int = 2, trace: bool = True,
                       lifetime: float = 60.0,
                       start_timeout: float = 10.0) -> Iterator[Kamailio]:
    """Kamailio on ``host``:<free port> (UDP) as the registrar of ``account`` (a PBX).

    ``account.username`` registers in ``account.domain`` with ``account.password``
    (401, bindings capped at ``max_expires`` seconds); INVITEs to a registered user
    go to its contact; INVITEs to ``account.human_aor`` need the account (407) and go
    to ``account.human``. Traces: "register", "human", "initial", "in-dialog",
    "reply"; bindings: ``location()``. Bounded and stopped like :func:`kamailio`.
    """
    workdir.mkdir(parents=True, exist_ok=True)

    def render(port: int, ctl_socket: str) -> str:
        return render_registrar_config(host, port, account, ctl_socket,
                                       max_expires=max_expires, debug=debug, trace=trace)

    with _running(workdir, host, render, None, lifetime, start_timeout) as registrar:
        yield registrar


@contextlib.contextmanager
def _running(workdir: Path, host: str, render: Callable[[int, str], str],
             list_file: Path | None, lifetime: float,
             start_timeout: float, shm_mb: int = 64) -> Iterator[Kamailio]:
    """Render the config for a free port, start Kamailio, wait for its OPTIONS and ctl."""
    # the ctl socket path must fit in sun_path (108 bytes): keep the run dir short
    rundir = Path(tempfile.mkdtemp(prefix="kam-", dir="/tmp"))
    port = free_port()
    config = workdir / "kamailio.cfg"
    config.write_text(render(port, f"{rundir}/kamailio_ctl"))
    log_path = workdir / "kamailio.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        ["timeout", "-k", "5", f"{lifetime:.0f}", KAMAILIO, "-f", str(config), "-DD", "-E",
         "-Y", str(rundir), "-P", str(rundir / "kamailio.pid"), "-m", str(shm_mb), "-M", "8"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    running = Kamailio(host, port, rundir, config, list_file, log_path, process)
    try:
        deadline = time.monotonic() + start_timeout
        while not (options_ping(host, port) and (rundir / "kamailio_ctl").exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"kamailio did not start:\n{running.log()[-4000:]}")
            time.sleep(0.05)
        yield running
    finally:
        stop_kamailio(process)
        log.close()
        shutil.rmtree(rundir, ignore_errors=True)


def stop_kamailio(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM by PID (timeout passes it on to kamailio), then SIGKILL its own group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group started with it, no other
            process.wait()
    return process.returncode
