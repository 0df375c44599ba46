"""Outbound calls and dialled callbacks against real sipp peers (customers and humans).

- POST /calls rings a sipp customer, who hears the scripted flow (RTP counted on
  a socket the customer's SDP names) and is hung up by it; bad requests get 422
  naming the field, a destination outside [outbound] allow gets 403 and nothing
  is dialled.
- A caller nobody could take is promised a callback; at its time warmline dials
  them (busy the first time, answered on the retry), says why it calls, and
  connects them to the department's human; the records and the KPI say kept.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.peers import engine, free_port, relay_block, render_scenario, run_sipp
from tests.interop.transfer_peers import WAIT_FOR_BYE, Human, human_hangs_up
from warmline.agents.scripted import ScriptedAgent, load_flow
from warmline.api import build_app
from warmline.brain.escalation import EscalationPolicy
from warmline.brain.routing import Department, Router
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.records.kpis import compute
from warmline.records.store import Event
from warmline.transfer.callback_dialler import CallbackSettings
from warmline.transfer.callback_schedule import CallbackPolicy
from warmline.transfer.callbacks import CallbackBook
from warmline.transfer.handoff import Destination, FallbackAction, Handoff
from warmline.transfer.outbound import OutboundPolicy, OutboundRequest
from warmline.transfer.policy import DestinationPolicy

pytestmark = pytest.mark.interop
OUR_ID = "sip:support@127.0.0.1"


class Records:
    """The engine's record writer, in memory."""

    writable = True

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self, call_id: str | None = None) -> list[str]:
        return [e.kind for e in self.events if call_id is None or e.call_id == call_id]


class RtpCounter(asyncio.DatagramProtocol):
    """What the customer hears: the arrival time of every RTP packet sent to them."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) > 12 and data[0] >> 6 == 2:  # RTP version 2
            self.arrivals.append(time.monotonic())


async def rtp_socket(port: int) -> tuple[asyncio.DatagramTransport, RtpCounter]:
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_datagram_endpoint(
        RtpCounter, local_addr=("127.0.0.1", port))
    return transport, counter


def outbound_policy(*patterns: str) -> OutboundPolicy:
    return OutboundPolicy(DestinationPolicy.build(list(patterns), [], "outbound"), OUR_ID)


async def no_dialogs_left(running: Any) -> None:
    for _ in range(60):
        if not running.ua.sessions:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"dialogs left open: {[s.call_id for s in running.ua.sessions]}")


def test_post_calls_rings_the_customer_and_the_flow_talks_to_them(tmp_path: Path) -> None:
    asyncio.run(_post_calls(tmp_path))


async def _post_calls(tmp_path: Path) -> None:
    rtp_port = free_port()
    customer = Human("customer_answers.xml", {"from": "sip:support@", "ring_ms": "300",
                                              "rtp_port": str(rtp_port), "tail": WAIT_FOR_BYE})
    customer_uri = f"sip:customer@127.0.0.1:{customer.port}"
    flow_file = tmp_path / "outbound.flow.toml"
    flow_file.write_text('start = "hello"\n[steps.hello]\n'
                         'say = "Hello, this is Acme. Your order has shipped today."\n'
                         'hangup = true\n')
    records = Records()
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
    rtp, heard = await rtp_socket(rtp_port)
    async with engine("udp") as running:
        agent: list[ScriptedAgent] = []
        calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU"],
                           lambda call: agent[0].on_call(call),
                           records_dir=tmp_path / "records", records=records,  # type: ignore[arg-type]
                           outbound=outbound_policy("sip:customer@127.0.0.1"),
                           destination_policy=DestinationPolicy())  # [transfer]: loopback
        agent.append(ScriptedAgent(calls, load_flow(flow_file)))
        peer = asyncio.ensure_future(customer.run(tmp_path / "customer"))
        await asyncio.sleep(0.3)  # sipp is listening
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(calls)),
                                   base_url="http://warmline")
        async with client:
            refusals = [
                ({"then": "ai"}, 422, "to"),
                ({"to": customer_uri, "then": "department"}, 422, "department"),
                ({"to": customer_uri, "then": "department", "department": "sales"}, 422,
                 "no department named 'sales'"),
                ({"to": customer_uri, "ring_timeout": 0}, 422, "ring_timeout"),
                ({"to": customer_uri, "trunk": "nope"}, 422, "trunk: no trunk named 'nope'"),
                ({"to": "sip:+19005550100@127.0.0.2"}, 403, "[outbound] allow"),
                ({"to": customer_uri, "caller_id": "sip:bank@127.0.0.1"}, 403, "caller_id"),
                ({"to": customer_uri, "then": "destination",
                  "destination": {"to": "sip:+19005550100@gw.example.com"}}, 403,
                 "destination.to: sip:+19005550100@gw.example.com is not an allowed"),
                ({"to": customer_uri, "callback_url": "http://169.254.169.254/"}, 422,
                 "callback_url"),
            ]
            for body, status, named in refusals:
                response = await client.post("/calls", json=body)
                assert response.status_code == status, (body, response.text)
                assert named in response.text, response.text
            assert (await client.get("/calls")).json() == []  # nothing was dialled
            placed = await client.post("/calls", json={"to": customer_uri, "then": "ai",
                                                       "ring_timeout": 10})
            assert placed.status_code == 201, placed.text
            call_id = placed.json()["call_id"]
            listed = (await client.get("/calls")).json()
            assert [(c["id"], c["direction"]) for c in listed] == [(call_id, "outbound")]
            assert listed[0]["state"] in ("dialing", "ringing")
            result = await peer
            assert result.returncode == 0, "customer: " + result.output[-3000:]
        await no_dialogs_left(running)
        await calls.close()
    await relay.close()
    rtp.close()
    assert records.kinds(call_id) == ["call.started", "call.outbound_ringing", "call.answered",
                                      "call.ended"]
    assert records.kinds().count("call.started") == 1  # the refused ones never rang
    answered = next(e for e in records.events if e.kind == "call.answered")
    assert answered.data["sip_status"] == 200
    seconds = (heard.arrivals[-1] - heard.arrivals[0]) if heard.arrivals else 0.0
    assert len(heard.arrivals) > 100 and seconds > 2.0, (len(heard.arrivals), seconds)


def test_a_customer_who_does_not_answer_is_cancelled_at_the_ring_timeout(
        tmp_path: Path) -> None:
    asyncio.run(_no_answer(tmp_path))


async def _no_answer(tmp_path: Path) -> None:
    customer = Human("human_rings.xml")
    records = Records()
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 20))
    async with engine("udp") as running:
        calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU"],
                           records_dir=tmp_path / "records", records=records,  # type: ignore[arg-type]
                           outbound=outbound_policy("sip:*@127.0.0.1"))
        peer = asyncio.ensure_future(customer.run(tmp_path / "customer"))
        await asyncio.sleep(0.3)
        asked = time.monotonic()
        call = await calls.place_call(OutboundRequest(customer.uri, ring_timeout=1.0))
        result = await peer
        took = time.monotonic() - asked
        assert result.returncode == 0, "customer: " + result.output[-3000:]
        await no_dialogs_left(running)
        await calls.close()
    await relay.close()
    assert records.kinds(call.id) == ["call.started", "call.outbound_ringing", "call.no_answer",
                                      "call.ended"]
    no_answer = next(e for e in records.events if e.kind == "call.no_answer")
    assert no_answer.data["sip_status"] == 408 and "within 1 s" in no_answer.data["reason"]
    assert 0.9 < took < 5.0 and call.ended and call.answered_at is None


def test_a_promised_callback_is_dialled_retried_and_connected_to_the_department(
        tmp_path: Path) -> None:
    asyncio.run(_callback(tmp_path))


async def _callback(tmp_path: Path) -> None:
    back_port, rtp_port = free_port(), free_port()
    back_uri = f"sip:caller@127.0.0.1:{back_port}"
    nobody = Human("human_rejects.xml", {"status": "486 Busy Here"})
    billing = Human("human_answers.xml", {"from": "sip:caller@", "ring_ms": "200",
                                          "tail": human_hangs_up(1500)})
    busy_customer = Human("human_rejects.xml", {"status": "486 Busy Here"}, port=back_port)
    customer = Human("customer_answers.xml", {"from": "sip:support@", "ring_ms": "200",
                                              "rtp_port": str(rtp_port), "tail": WAIT_FOR_BYE},
                     port=back_port)
    # the caller calls from its own port, but its From (where it wants to be called back)
    # is the port the customer's phones listen on
    scenario = render_scenario("caller_waits.xml", tmp_path, headers="", tail=WAIT_FOR_BYE)
    scenario.write_text(scenario.read_text().replace(
        "<sip:caller@[local_ip]:[local_port]>", f"<{back_uri}>"))
    records = Records()
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 60))
    rtp, heard = await rtp_socket(rtp_port)
    router = Router([Department("billing", (Destination(billing.uri, "bridge", 10),),
                                intents=frozenset({"billing"}))], "billing")
    settings = CallbackSettings(CallbackPolicy(attempts=3, retry_interval=2.0),
                                name="Acme billing", ring_timeout=8)
    async with engine("udp") as running:
        def promise(call: Call) -> None:
            if not calls.handoffs:  # the first caller: nobody can take them
                calls.transfer(call.id, Handoff(
                    call.id, Destination(nobody.uri, "bridge", 5), context={"intent": "billing"},
                    fallback=[FallbackAction("callback", delay_seconds=1)]))

        calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU"], promise,
                           records_dir=tmp_path / "records", records=records,  # type: ignore[arg-type]
                           escalation=EscalationPolicy(router=router),
                           outbound=outbound_policy(back_uri), callbacks=settings)
        calls.start()
        async def customer_phone() -> list[Any]:
            """Busy for the first callback, then (the same port) answers the retry."""
            return [await busy_customer.run(tmp_path / "busy"),
                    await customer.run(tmp_path / "customer")]

        humans = [asyncio.ensure_future(human.run(tmp_path / name))
                  for name, human in (("nobody", nobody), ("billing", billing))]
        phone = asyncio.ensure_future(customer_phone())
        await asyncio.sleep(0.3)
        caller = await run_sipp(["-sf", str(scenario), f"127.0.0.1:{running.spec.port}",
                                 "-p", str(free_port()), "-m", "1"], tmp_path, timeout=20)
        assert caller.returncode == 0, "caller: " + caller.output[-3000:]
        for name, result in zip(("busy customer", "customer"), await phone, strict=True):
            assert result.returncode == 0, f"{name}: " + result.output[-3000:]
        for name, peer in zip(("nobody", "billing"), humans, strict=True):
            result = await peer
            assert result.returncode == 0, f"{name}: " + result.output[-3000:]
        await no_dialogs_left(running)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(calls)),
                                   base_url="http://warmline")
        async with client:
            [row] = (await client.get("/callbacks")).json()
        await calls.close()
    await relay.close()
    rtp.close()
    assert row["state"] == "kept" and row["attempts"] == 2 and row["intent"] == "billing"
    callback_kinds = [k for k in records.kinds() if k.startswith("callback.")]
    assert callback_kinds == ["callback.dialled", "callback.retry", "callback.dialled",
                              "callback.answered", "callback.connected"], callback_kinds
    retry = next(e for e in records.events if e.kind == "callback.retry")
    assert retry.data["sip_status"] == 486 and retry.data["outcome"] == "busy"
    assert "call.busy" in records.kinds()
    connected_call = next(e for e in records.events if e.kind == "callback.connected").call_id
    on_it = records.kinds(connected_call)
    assert on_it.index("handoff.announced") < on_it.index("handoff.answered") \
        < on_it.index("handoff.connected"), on_it
    announced = next(e for e in records.events if e.kind == "handoff.announced")
    assert "Acme billing calling you back about billing" in announced.data["text"]
    assert len(heard.arrivals) > 100, len(heard.arrivals)  # announcement, ringback, human
    assert compute(records.events)["overall"]["callback_kept_share"] == 1.0
    book = CallbackBook(tmp_path / "records" / "callbacks.jsonl")
    book.load()  # what a restart would read: kept, not dialled again
    assert [p.state.value for p in book.progress.values()] == ["kept"]
