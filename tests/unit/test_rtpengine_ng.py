"""The ng client: bencode both ways, cookies and retransmission on a fake clock, error
replies and timeouts as clear exceptions, and the plane's failure paths (no rtpengine)."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from warmline.media.ng import (
    BValue,
    NgClient,
    NgCommandError,
    NgProtocolError,
    NgSession,
    NgTimeout,
    RtpengineError,
    bdecode,
    bencode,
    check_reply,
)
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.rtpengine import (
    RtpenginePlane,
    describe,
    media_address,
    parse_ng_address,
    payloads_of,
)


# ------------------------------------------------------------------ bencode
def test_bencode_round_trips_what_rtpengine_sends() -> None:
    value = {"command": "offer", "call-id": "c1", "flags": ["port latching"], "n": -3,
             "sdp": b"v=0\r\n", "nested": {"b": 1, "a": []}}
    encoded = bencode(value)
    assert encoded.startswith(b"d7:call-id2:c17:command5:offer")  # keys sorted
    assert bdecode(encoded) == {"call-id": b"c1", "command": b"offer",
                                "flags": [b"port latching"], "n": -3, "sdp": b"v=0\r\n",
                                "nested": {"a": [], "b": 1}}


@pytest.mark.parametrize("bad", [b"", b"d", b"i12", b"5:abc", b"d3:keyi1e", b"l" * 40 + b"e" * 40,
                                 b"i1ejunk", b"di1ei2ee", b"x", b"d3:key"])
def test_malformed_bencode_is_a_protocol_error(bad: bytes) -> None:
    with pytest.raises(NgProtocolError):
        bdecode(bad)


def test_bencode_refuses_what_it_cannot_say() -> None:
    with pytest.raises(TypeError):
        bencode(True)
    with pytest.raises(TypeError):
        bencode(1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the session, fake clock
def test_a_request_is_resent_with_the_same_cookie_doubling_then_times_out() -> None:
    session = NgSession(timeout=1.0, first_retransmit=0.1)
    cookie, datagram = session.request("ping", {}, now=10.0)
    assert datagram == cookie + b" d7:command4:pinge"
    sent = []
    for now in (10.05, 10.1, 10.2, 10.3, 10.5, 10.75, 10.95):
        resend, expired = session.due(now)
        assert not expired
        sent += [(now, d) for d in resend]
    assert [now for now, _ in sent] == [10.1, 10.3, 10.75]  # after 0.1, then 0.2, then 0.4
    assert all(d == datagram for _, d in sent)  # the same cookie: rtpengine runs it once
    assert session.next_wakeup() == pytest.approx(11.0)
    resend, expired = session.due(11.0)
    assert resend == [] and expired == [(cookie, "ping")]
    assert session.pending == 0 and session.next_wakeup() is None


def test_replies_are_matched_by_cookie_and_late_or_unknown_ones_ignored() -> None:
    session = NgSession()
    first, _ = session.request("query", {"call-id": "a"}, now=0.0)
    second, _ = session.request("query", {"call-id": "b"}, now=0.0)
    assert first != second
    assert session.receive(second + b" d6:result2:oke") == (second, {"result": b"ok"})
    assert session.receive(second + b" d6:result2:oke") is None  # a duplicate
    assert session.receive(b"stranger d6:result2:oke") is None
    with pytest.raises(NgProtocolError):
        session.receive(b"no-cookie-at-all")
    with pytest.raises(NgProtocolError):
        session.receive(first + b" li1ee")  # not a dictionary
    assert session.pending == 0


def test_requests_in_flight_are_bounded() -> None:
    session = NgSession(max_pending=2)
    session.request("ping", {}, 0.0)
    session.request("ping", {}, 0.0)
    with pytest.raises(RtpengineError, match="2 requests already waiting"):
        session.request("ping", {}, 0.0)


def test_an_error_reply_names_the_command_and_rtpengine_s_reason() -> None:
    assert check_reply("ping", {"result": b"pong"}) == {"result": b"pong"}
    with pytest.raises(NgCommandError, match="'play media': Unknown call-ID"):
        check_reply("play media", {"result": b"error", "error-reason": b"Unknown call-ID"})
    with pytest.raises(NgCommandError, match="load limit"):
        check_reply("offer", {"result": b"load limit"})


# ------------------------------------------------------------------ the asyncio client
class FakeRtpengine(asyncio.DatagramProtocol):
    """Answers ng on loopback: drops the first ``drop`` datagrams, then replies ``reply``."""

    def __init__(self, reply: bytes, drop: int = 0) -> None:
        self.reply, self.drop = reply, drop
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        if len(self.received) > self.drop and self.transport is not None:
            cookie = data.split(b" ", 1)[0]
            self.transport.sendto(cookie + b" " + self.reply, addr)


async def _fake(reply: bytes, drop: int = 0) -> tuple[FakeRtpengine, int]:
    loop = asyncio.get_running_loop()
    fake = FakeRtpengine(reply, drop)
    transport, _ = await loop.create_datagram_endpoint(lambda: fake,
                                                       local_addr=("127.0.0.1", 0))
    return fake, transport.get_extra_info("sockname")[1]


def test_the_client_retransmits_until_answered() -> None:
    async def scenario() -> None:
        fake, port = await _fake(b"d6:result4:ponge", drop=2)
        client = NgClient("127.0.0.1", port, timeout=1.0, first_retransmit=0.02)
        assert await client.command("ping") == {"result": b"pong"}
        assert len(fake.received) == 3 and len(set(fake.received)) == 1
        client.close()
        assert fake.transport is not None
        fake.transport.close()
    asyncio.run(scenario())


def test_the_client_raises_rtpengine_s_error_and_times_out_when_nobody_answers() -> None:
    async def scenario() -> None:
        fake, port = await _fake(b"d12:error-reason15:Unknown call-ID6:result5:errore")
        client = NgClient("127.0.0.1", port, timeout=0.3, first_retransmit=0.05)
        with pytest.raises(NgCommandError, match="Unknown call-ID"):
            await client.command("delete", **{"call-id": "x"})
        client.close()
        assert fake.transport is not None
        fake.transport.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))  # bound, never answers
            quiet = NgClient("127.0.0.1", silent.getsockname()[1], timeout=0.3,
                             first_retransmit=0.05)
            began = asyncio.get_running_loop().time()
            with pytest.raises(NgTimeout,
                               match=r"udp:127.0.0.1:\d+ did not answer 'ping' in 0.3 s"):
                await quiet.command("ping")
            assert 0.25 < asyncio.get_running_loop().time() - began < 1.0
            quiet.close()
    asyncio.run(scenario())


# ------------------------------------------------------------------ plane pieces
def test_ng_addresses_parse_or_say_what_is_wrong() -> None:
    assert parse_ng_address("udp:127.0.0.1:2223") == ("127.0.0.1", 2223)
    assert parse_ng_address("udp:[::1]:2223") == ("::1", 2223)
    assert parse_ng_address("udp:rtpengine.internal:22222") == ("rtpengine.internal", 22222)
    for bad in ("127.0.0.1:2223", "tcp:127.0.0.1:2223", "udp:127.0.0.1", "udp:h:0",
                "udp:h:70000", "udp::::1:5"):
        with pytest.raises(ValueError, match=r"udp:HOST:PORT|out of range"):
            parse_ng_address(bad)


def test_the_sdp_for_rtpengine_and_the_address_in_its_reply() -> None:
    text = describe("127.0.0.1", 20000, payloads_of(None), mux=True)
    assert "m=audio 20000 RTP/AVP 0 8\r\n" in text and "a=rtcp-mux" in text
    assert "c=IN IP6 ::1" in describe("::1", 9, [(0, "PCMU/8000")])
    reply = {"sdp": b"v=0\r\nc=IN IP4 192.0.2.7\r\nm=audio 30012 RTP/AVP 0\r\n"}
    assert media_address(reply) == ("192.0.2.7", 30012)  # type: ignore[arg-type]
    with pytest.raises(RtpengineError, match="without SDP"):
        media_address({"result": b"ok"})


def test_no_rtpengine_means_no_leg_an_oserror_and_not_ready() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            relay = EmbeddedRelay("127.0.0.1", PortRange(31000, 31010))
            plane = RtpenginePlane(NgClient("127.0.0.1", silent.getsockname()[1], timeout=0.2,
                                            first_retransmit=0.05), relay)
            assert plane.healthy() and plane.spare_legs() == 5
            with pytest.raises(OSError, match="did not answer 'offer'"):
                await plane.open_leg("caller")
            assert not relay.legs  # the relay leg behind it was closed again
            assert not plane.healthy() and plane.spare_legs() == 0
            assert await plane.ping() is False
            await plane.close()
    asyncio.run(scenario())


# ------------------------------------------------------------------ rtpengine bridging a pair
class ScriptedNg(NgClient):
    """Records every command; offers and answers put one of ``ports`` in the SDP."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__("127.0.0.1", 9)
        self.ports = ports
        self.sent: list[tuple[str, dict[str, object]]] = []

    async def command(self, command: str, **fields: BValue) -> dict[str, BValue]:
        self.sent.append((command, fields))
        if command in ("offer", "answer") and fields.get("sdp", "").startswith("v=0"):  # type: ignore[union-attr]
            port = self.ports.pop(0) if self.ports else 9
            return {"result": b"ok", "sdp": f"c=IN IP4 127.0.0.1\r\nm=audio {port} RTP/AVP 0\r\n"
                    .encode()}
        if command == "query":
            stats = {"medias": [{"streams": [{"stats": {"packets": 500}}]}]}
            return {"result": b"ok", "tags": {"far": stats, "relay": stats}}  # type: ignore[dict-item]
        return {"result": b"ok"}

    def offers(self) -> list[tuple[str, int]]:
        """(call-id, port the relay side is described at) of every offer, in order."""
        return [(str(fields["call-id"]), int(str(fields["sdp"]).split("m=audio ")[1].split()[0]))
                for command, fields in self.sent if command == "offer"]


def test_a_plain_bridged_pair_goes_to_rtpengine_and_comes_back_before_a_change() -> None:
    from warmline.media.player import Player
    from warmline.media.rtp import RtpPacket
    from warmline.media.sdp import CODECS, AudioStream

    async def scenario() -> None:
        # rtpengine's side of each leg: a socket that "is" its relay-facing port
        facing = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        for sock in facing:
            sock.bind(("127.0.0.1", 0))
        ports = [facing[0].getsockname()[1], facing[1].getsockname()[1]]
        client = ScriptedNg([30000, ports[0], 30002, ports[1]])  # offer: far; answer: relay
        plane = RtpenginePlane(client, EmbeddedRelay("127.0.0.1", PortRange(31100, 31120)),
                               bridge=True)
        a, b = await plane.open_leg("caller"), await plane.open_leg("human")
        assert (a.local.port, b.local.port) == (30000, 30002)
        assert a.relay_facing == ("127.0.0.1", ports[0])
        for leg in (a, b):
            leg.configure(AudioStream(0, CODECS["pcmu"], None, 20, "127.0.0.1", 40000,
                                      "sendrecv"))
        a.route_to(b)
        b.route_to(a)
        assert plane.hand_over_plain_pairs() == 0  # neither far end has sent yet
        for n in range(3):  # each far end talks (through "rtpengine" to the relay legs)
            for sock, leg in zip(facing, (a, b), strict=True):
                sock.sendto(RtpPacket(0, n, 160 * n, 7, b"\xff" * 160).to_bytes(),
                            (leg.inner.local.host, leg.inner.local.port))
            await asyncio.sleep(0.03)
        before = len(client.offers())
        assert plane.hand_over_plain_pairs() == 1 and a.direct is b and b.direct is a
        assert plane.hand_over_plain_pairs() == 0  # once
        await asyncio.sleep(0.05)
        # each call's relay side now points at the other call's relay-facing port
        assert sorted(client.offers()[before:]) == sorted([(a.call_id, ports[1]),
                                                           (b.call_id, ports[0])])
        await a.refresh_direct_counts()
        assert a.counters.received >= 3  # what the relay leg saw, plus rtpengine's count
        before = len(client.offers())
        a.play(Player(np.zeros(800, dtype=np.int16)))  # hold music: back through warmline
        assert a.direct is None and b.direct is None
        await asyncio.sleep(0.05)
        assert sorted(client.offers()[before:]) == sorted([(a.call_id, a.inner.local.port),
                                                           (b.call_id, b.inner.local.port)])
        a.close()
        b.close()
        await asyncio.sleep(0.05)
        assert [f["call-id"] for c, f in client.sent if c == "delete"] == [a.call_id, b.call_id]
        await plane.close()
        for sock in facing:
            sock.close()
    asyncio.run(scenario())


def test_a_leg_names_its_anchor_and_an_heir_releases_a_dead_nodes_anchor() -> None:
    """An rtpengine leg outlives its node (rtpengine goes on forwarding): its call-id is
    the anchor the heir deletes once the call moved to its own legs; embedded legs have
    none (their sockets die with the process) and releasing is a no-op there."""
    async def scenario() -> None:
        client = ScriptedNg([30000, 30001])
        relay = EmbeddedRelay("127.0.0.1", PortRange(31200, 31210))
        plane = RtpenginePlane(client, relay)
        leg = await plane.open_leg("caller")
        assert leg.anchor == leg.call_id
        plane.release("warmline-deadbeef-7")  # what a dead node's leg left
        await asyncio.sleep(0.01)
        assert ("delete", {"call-id": "warmline-deadbeef-7", "delete delay": 0}) in client.sent
        inner = await relay.open_leg("human")
        assert inner.anchor is None
        relay.release("anything")
        await plane.close()
    asyncio.run(scenario())
