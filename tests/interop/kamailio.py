"""A real Kamailio around warmline, no database: a dispatching proxy, or a registrar/PBX.

    with kamailio(tmp_path, ["sip:127.0.0.1:5071", "sip:127.0.0.1:5072"]) as proxy:
        ...call sip:ai@{proxy.host}:{proxy.port}; proxy.traces(), proxy.tm_stats()

    account = PbxAccount("pbx.test", "warmline", "s3cret", human="sip:human@127.0.0.1:5080")
    with kamailio_registrar(tmp_path, account) as pbx:
        ...warmline registers as warmline@pbx.test; pbx.traces("register"), pbx.location()

The config (CONFIG below) is rendered per test into the work directory and is
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

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMCMD = shutil.which("kamcmd") or "/usr/sbin/kamcmd"

CONFIG = r"""#!KAMAILIO
#
# warmline behind Kamailio: a record-routing proxy with the dispatcher in front
# of several warmline instances, no database. Rendered by tests/interop/kamailio.py.
#
# What warmline relies on (RFC 3261):
#  * record_route() on every request that creates a dialog (INVITE, SUBSCRIBE,
#    REFER, section 16.6 step 4): the proxy stays in the path of the ACK, BYE,
#    re-INVITE, REFER and NOTIFY of the dialog. warmline copies the Record-Route
#    into its 1xx/2xx (12.1.1) and sends its own in-dialog requests (REFER, BYE)
#    to the proxy with the route set as Route headers (12.2.1.1).
#  * loose_route() for the requests inside a dialog (those with a To tag).
#  * the dispatcher picks a warmline instance for each initial INVITE from the
#    list file (round-robin) and, if one fails (408, 500, 503, no answer within
#    fr_timer), marks it inactive and tries the next.
# Operators: replace the listen address, list the warmline instances in the
# list file, and consider ds_ping_interval so an instance marked inactive is
# probed with OPTIONS and comes back when it answers.

####### Rendered per deployment (per test) #######
#!define WL_DISPATCHER_LIST "@@LIST_FILE@@"
#!define WL_CTL_SOCKET "unix:@@CTL_SOCKET@@"
@@TRACE_DEFINE@@

####### Global parameters #########
debug=@@DEBUG@@              # 2 = notice: the trace lines below are at notice level
log_stderror=yes      # foreground, logs on stderr (the tests also pass -E)
memdbg=5
memlog=5
children=4            # UDP worker processes
auto_aliases=no       # "myself" is the listen address below, nothing guessed from DNS
dns=no
rev_dns=no
disable_tcp=yes       # UDP only in this layout
listen=udp:@@HOST@@:@@PORT@@

####### Modules #########
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "dispatcher.so"

# kamcmd -s unix:RUNDIR/kamailio_ctl tm.stats | dispatcher.list | core.uptime
modparam("ctl", "binrpc", WL_CTL_SOCKET)

# A backend that sends nothing (not even 100 Trying) within fr_timer is given up
# on and the next one is tried; once it answers 100, fr_inv_timer bounds ringing.
modparam("tm", "fr_timer", @@FR_TIMER_MS@@)
modparam("tm", "fr_inv_timer", 30000)

# Record-Route: <sip:HOST:PORT;lr>, no From tag appended (not needed here).
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 0)

# Backends come from a text file: "SETID SIP-URI [FLAGS [PRIORITY [ATTRS]]]".
# flags 2: keep the other destinations of the set (XAVP _dsdst_) for ds_next_dst().
modparam("dispatcher", "list_file", WL_DISPATCHER_LIST)
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "xavp_ctx", "_dsctx_")
modparam("dispatcher", "ds_ping_interval", 0)   # no OPTIONS probing in the tests

####### Routing logic #########

request_route {
	route(REQINIT);

	# CANCEL follows its INVITE's transaction
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			route(RELAY);
		}
		exit;
	}

	# retransmissions are absorbed by the transaction
	if (!is_method("ACK")) {
		if (t_precheck_trans()) {
			t_check_trans();
			exit;
		}
		t_check_trans();
	}

	route(WITHINDLG);

	### initial requests only from here (no To tag)

	# drop preloaded routes; stay in the path of every dialog we create
	remove_hf("Route");
	if (is_method("INVITE|SUBSCRIBE|REFER")) {
		record_route();
	}

	if ($rU == $null) {
		sl_send_reply("484", "Address Incomplete");
		exit;
	}

	route(DISPATCH);
}

route[RELAY] {
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

route[REQINIT] {
	force_rport();
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	# liveness probe: OPTIONS to the proxy itself (no user part)
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {
		sl_send_reply("200", "Keepalive");
		exit;
	}
	if (!sanity_check("1511", "7")) {
		xlog("L_WARN", "malformed SIP message from $si:$sp\n");
		exit;
	}
}

# Requests inside a dialog follow the route set that record_route() built.
route[WITHINDLG] {
	if (!has_totag()) {
		return;
	}
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE in-dialog method=$rm callid=$ci src=$si:$sp route=$hdr(Route) ruri=$ru\n");
#!endif
	if (loose_route()) {
		if (is_method("NOTIFY")) {
			# as Kamailio's stock config does (RFC 6665); harmless in an
			# INVITE dialog, where the route set is not refreshed by NOTIFY
			record_route();
		}
		route(RELAY);
	}
	if (is_method("ACK")) {
		if (t_check_trans()) {
			# ACK for a non-2xx final response: hop-by-hop, same transaction
			route(RELAY);
		}
		# ACK matching nothing: drop it
		exit;
	}
	xlog("L_WARN", "WLTRACE no-route method=$rm callid=$ci src=$si:$sp ruri=$ru\n");
	sl_send_reply("404", "Not here");
	exit;
}

# Initial INVITEs (and anything else that creates a dialog) go to warmline.
route[DISPATCH] {
	# set 1, algorithm 4: round-robin over the active destinations
	if (!ds_select_dst("1", "4")) {
		xlog("L_WARN", "WLTRACE no-backend method=$rm callid=$ci\n");
		sl_send_reply("503", "No warmline instance available");
		exit;
	}
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE initial method=$rm callid=$ci src=$si:$sp ruri=$ru dst=$du\n");
#!endif
	t_on_failure("DS_FAILOVER");
	route(RELAY);
}

# A warmline instance that fails or does not answer: mark it inactive (and
# probing) and try the next destination of the set.
failure_route[DS_FAILOVER] {
	if (t_is_canceled()) {
		exit;
	}
	if (t_check_status("408|500|503") or (t_branch_timeout() and !t_branch_replied())) {
		xlog("L_WARN", "WLTRACE failover callid=$ci from=$du status=$T_reply_code\n");
		ds_mark_dst("ip");
		if (ds_next_dst()) {
			t_on_failure("DS_FAILOVER");
			route(RELAY);
			exit;
		}
	}
}"""  # noqa: E501 (Kamailio script lines stay whole)

REGISTRAR_CONFIG = r"""#!KAMAILIO
#
# A PBX (or a carrier's edge) that warmline registers with as a trunk: registrar
# with digest auth, no database. Rendered by tests/interop/kamailio.py.
#
#  * REGISTER (RFC 3261 section 10): challenged with 401 (qop=auth) in the realm
#    of the To domain, then save("location") in memory (usrloc db_mode 0).
#    max_expires caps every binding, so a short value makes the client refresh
#    within seconds; Expires: 0 removes the binding.
#  * INVITE to a user registered here: lookup("location") sends it to the
#    registered contact, unauthenticated (a carrier delivering a call to the
#    PBX's user: how callers reach warmline).
#  * INVITE to the human's user: only for the account, challenged with 407
#    (proxy authentication, qop=auth), then relayed to the human's phone.
#  * record_route() on initial INVITEs, loose_route() for requests in a dialog.
# Operators: the account and password come from a subscriber table (auth_db)
# in a real PBX; the domain is what the trunk's uri names (DNS: NAPTR/SRV/A).

####### Rendered per deployment (per test) #######
#!define WL_CTL_SOCKET "unix:@@CTL_SOCKET@@"
#!define WL_REALM "@@DOMAIN@@"
#!define WL_USER "@@USERNAME@@"
#!define WL_PASSWORD "@@PASSWORD@@"
#!define WL_HUMAN_USER "@@HUMAN_USER@@"
#!define WL_HUMAN_URI "@@HUMAN_URI@@"
@@TRACE_DEFINE@@
@@HUMAN_DEFINE@@

####### Global parameters #########
debug=@@DEBUG@@
log_stderror=yes
memdbg=5
memlog=5
children=2
auto_aliases=no
alias="@@DOMAIN@@"            # the domain the account registers in (any port)
alias="@@DOMAIN@@:@@PORT@@"
dns=no
rev_dns=no
disable_tcp=yes
listen=udp:@@HOST@@:@@PORT@@

####### Modules #########
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("ctl", "binrpc", WL_CTL_SOCKET)
modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 0)

# bindings in memory only; kamcmd ul.dump lists them
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "timer_interval", 1)
modparam("registrar", "min_expires", 1)
modparam("registrar", "max_expires", @@MAX_EXPIRES@@)
modparam("registrar", "default_expires", @@MAX_EXPIRES@@)

# nonces live long enough for a refresh to reuse the last one (nc + 1)
modparam("auth", "nonce_expire", 300)

####### Routing logic #########

request_route {
	route(REQINIT);

	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			route(RELAY);
		}
		exit;
	}

	if (!is_method("ACK")) {
		if (t_precheck_trans()) {
			t_check_trans();
			exit;
		}
		t_check_trans();
	}

	route(WITHINDLG);

	### initial requests only from here (no To tag)
	remove_hf("Route");

	if (is_method("REGISTER")) {
		route(REGISTRAR);
	}

	if (!(uri == myself)) {
		sl_send_reply("403", "Not a domain served here");
		exit;
	}
	if ($rU == $null) {
		sl_send_reply("484", "Address Incomplete");
		exit;
	}
	if ($rU == WL_HUMAN_USER) {
		route(HUMAN);
	}
	route(LOCATION);
}

route[RELAY] {
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

route[REQINIT] {
	force_rport();
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {
		sl_send_reply("200", "Keepalive");
		exit;
	}
	if (!sanity_check("1511", "7")) {
		xlog("L_WARN", "malformed SIP message from $si:$sp\n");
		exit;
	}
}

route[WITHINDLG] {
	if (!has_totag()) {
		return;
	}
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE in-dialog method=$rm callid=$ci cseq=$cs src=$si:$sp route=$hdr(Route) ruri=$ru\n");
#!endif
	if (loose_route()) {
		route(RELAY);
	}
	if (is_method("ACK")) {
		if (t_check_trans()) {
			route(RELAY);
		}
		exit;
	}
	xlog("L_WARN", "WLTRACE no-route method=$rm callid=$ci src=$si:$sp ruri=$ru\n");
	sl_send_reply("404", "Not here");
	exit;
}

# REGISTER: digest (401) for the account, then the binding in memory.
# auth= is the code of pv_www_authenticate: 1 ok, -2 wrong password, -5 no credentials
route[REGISTRAR] {
	$var(auth) = 1;
	if (!pv_www_authenticate("$td", WL_PASSWORD, "0")) {
		$var(auth) = $rc;
	} else if ($au != WL_USER) {
		$var(auth) = -3;
	}
	if ($var(auth) != 1) {
#!ifdef WITH_TRACE
		xlog("L_NOTICE", "WLTRACE register outcome=challenged auth=$var(auth) callid=$ci cseq=$cs src=$si:$sp to=$tu expires=$hdr(Expires) user=$au\n");
#!endif
		www_challenge("$td", "1");
		exit;
	}
	consume_credentials();
	if (!save("location")) {
		xlog("L_WARN", "WLTRACE register outcome=save-failed callid=$ci cseq=$cs src=$si:$sp\n");
		sl_reply_error();
		exit;
	}
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE register outcome=saved auth=$var(auth) callid=$ci cseq=$cs src=$si:$sp to=$tu expires=$hdr(Expires) user=$au contact=$ct\n");
#!endif
	exit;
}

# An INVITE to the human: the account's only (407), then the human's phone.
route[HUMAN] {
#!ifdef WITH_HUMAN
	$var(auth) = 1;
	if (!pv_proxy_authenticate(WL_REALM, WL_PASSWORD, "0")) {
		$var(auth) = $rc;
	} else if ($au != WL_USER) {
		$var(auth) = -3;
	}
	if ($var(auth) != 1) {
#!ifdef WITH_TRACE
		xlog("L_NOTICE", "WLTRACE human outcome=challenged auth=$var(auth) method=$rm callid=$ci cseq=$cs src=$si:$sp user=$au\n");
#!endif
		proxy_challenge(WL_REALM, "1");
		exit;
	}
	consume_credentials();
	if (is_method("INVITE")) {
		record_route();
	}
	$ru = WL_HUMAN_URI;
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE human outcome=relayed auth=$var(auth) method=$rm callid=$ci cseq=$cs src=$si:$sp user=$au ruri=$ru\n");
#!endif
	route(RELAY);
#!else
	sl_send_reply("480", "No human here");
	exit;
#!endif
}

# An INVITE to a user registered here: to its registered contact.
route[LOCATION] {
	if (!lookup("location")) {
		xlog("L_NOTICE", "WLTRACE not-registered method=$rm callid=$ci src=$si:$sp ruri=$ru\n");
		sl_send_reply("404", "Not registered");
		exit;
	}
	if (is_method("INVITE")) {
		record_route();
	}
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE initial method=$rm callid=$ci cseq=$cs src=$si:$sp ruri=$ru\n");
#!endif
	route(RELAY);
}

# every reply Kamailio relays (not the ones it sends itself)
reply_route {
#!ifdef WITH_TRACE
	xlog("L_NOTICE", "WLTRACE reply method=$rm status=$rs callid=$ci cseq=$cs src=$si:$sp\n");
#!endif
}"""  # noqa: E501 (Kamailio script lines stay whole)


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
             start_timeout: float) -> Iterator[Kamailio]:
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
         "-Y", str(rundir), "-P", str(rundir / "kamailio.pid"), "-m", "64", "-M", "8"],
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
