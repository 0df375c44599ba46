"""Keeping the trunks that ask for it registered, and what `GET /trunks` shows of them.

Each trunk with ``register = true`` gets one REGISTER client in the UA core
(sip/registration.py does the protocol: digest, refresh, 423, back-off). This
module resolves where to send it (RFC 3263, through the outbound proxy when
the trunk has one), starts it, retries name resolution that fails, logs each
change of state once, and removes the bindings at shutdown so a carrier stops
sending calls to a process that has gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from warmline.calls.trunks import Trunk, Trunks
from warmline.sip.events import Target
from warmline.sip.registration import Registration, RegistrationState
from warmline.transport.resolver import ResolutionError, Resolver
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline.trunks")
RESOLVE_RETRY = 30.0  # seconds between attempts to resolve a registrar that did not resolve
UNREGISTER_WAIT = 2.0  # seconds shutdown waits for the registrars to confirm


@dataclass
class TrunkStatus:
    trunk: Trunk
    registration: Registration | None = None
    problem: str | None = None  # before a REGISTER could be sent (a name that did not resolve)
    logged: tuple[RegistrationState, str] | None = None

    def as_dict(self, now: float) -> dict[str, Any]:
        """The API's view (`GET /trunks`); ``now`` on the loop clock for the times left."""
        trunk, registration = self.trunk, self.registration
        view: dict[str, Any] = {"name": trunk.name, "uri": str(trunk.uri),
                                "register": trunk.register,
                                "outbound_proxy": str(trunk.outbound_proxy)
                                if trunk.outbound_proxy else None}
        if not trunk.register:
            return {**view, "state": "not registering"}
        if registration is None:  # resolving the registrar, or that failed
            state = RegistrationState.FAILED if self.problem else RegistrationState.REGISTERING
            return {**view, "state": state.value, "reason": self.problem or "resolving"}
        return {**view, "state": registration.state.value, "status": registration.status,
                "reason": registration.reason, "expires": registration.granted,
                "refresh_in": _left(registration.refresh_at, now),
                "retry_in": _left(registration.retry_at, now),
                "failures": registration.failures}


class TrunkRegistrations:
    """Registers every trunk that asks for it on ``shell``'s UA."""

    def __init__(self, shell: SipShell, trunks: Trunks, resolver: Resolver) -> None:
        self.shell = shell
        self.resolver = resolver
        self.statuses = {trunk.name: TrunkStatus(trunk) for trunk in trunks.trunks}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def start(self) -> None:
        for status in self.statuses.values():
            if status.trunk.register:
                task = asyncio.ensure_future(self._register(status))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def view(self) -> list[dict[str, Any]]:
        now = self.shell.now()
        return [status.as_dict(now) for status in self.statuses.values()]

    def changed(self, registration: Registration) -> None:
        """Log a registration's state when it changes (not on every refresh)."""
        status = self.statuses.get(registration.name)
        if status is None or registration.state is RegistrationState.REGISTERING:
            return
        seen = (registration.state, registration.reason)
        if status.logged == seen:
            return
        status.logged = seen
        if registration.state is RegistrationState.FAILED:
            wait = (registration.retry_at or self.shell.now()) - self.shell.now()
            log.warning("trunk %s: registration failed: %s; next try in %.0f s",
                        registration.name, registration.reason, wait)
        else:
            log.info("trunk %s: %s%s", registration.name, registration.state.value,
                     f" for {registration.granted} s" if registration.granted else "")

    async def stop(self) -> None:
        """Remove every binding (Expires: 0) and wait a little for the registrars.

        Only bindings that may exist are removed: a registration that was refused
        (a wrong password) is left alone, so shutdown does not send the refused
        credentials again (carriers count failed logins). Safe to call twice.
        """
        if self._stopped:
            return
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        bound = [s.registration for s in self.statuses.values()
                 if s.registration is not None and s.registration.granted is not None]
        for registration in bound:
            self._unregister(registration)
        deadline = time.monotonic() + UNREGISTER_WAIT
        while time.monotonic() < deadline and any(
                r.state is RegistrationState.REGISTERING for r in bound):
            await asyncio.sleep(0.05)

    def _unregister(self, registration: Registration) -> None:
        self.shell.run(lambda now: self.shell.ua.unregister(registration, now))

    async def _register(self, status: TrunkStatus) -> None:
        trunk = status.trunk
        while True:
            try:
                resolution = await self.resolver.resolve(trunk.next_hop)
            except ResolutionError as error:
                status.problem = f"dns_failed: {error}"
                log.warning("trunk %s: cannot register: %s; next try in %.0f s", trunk.name,
                            status.problem, RESOLVE_RETRY)
                await asyncio.sleep(RESOLVE_RETRY)
                continue
            status.problem = None
            status.registration = self._start(trunk, resolution.targets[0])
            return

    def _start(self, trunk: Trunk, target: Target) -> Registration:
        return self.shell.run(lambda now: self.shell.ua.register(
            trunk.uri, trunk.aor, now, name=trunk.name, expires=trunk.expires, target=target,
            credentials=trunk.credentials, headers=trunk.route_headers))


def _left(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else round(max(0.0, deadline - now), 1)
