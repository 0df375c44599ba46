"""Route sets (RFC 3261 §12.2.1.1): loose and strict routing, and where requests go."""

from __future__ import annotations

from warmline.sip.dialog import Dialog, target_for_uri
from warmline.sip.events import Target
from warmline.sip.headers import parse_name_addr
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.uri import parse_sip_uri

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK1\r\n"
    b"Record-Route: <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:p1.example.com:5070;lr;transport=tcp>\r\n"
    b"From: <sip:alice@atlanta.example.com>;tag=a\r\nTo: <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: route-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.99:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def uas_dialog(invite: bytes = INVITE) -> Dialog:
    request = parse_message(invite)
    assert isinstance(request, Request)
    contact = parse_name_addr("<sip:bob@192.0.2.2:5080>")
    return Dialog.from_uas_request(request, "b", contact)


def test_uas_keeps_record_route_order_and_sends_to_the_first_proxy() -> None:
    dialog = uas_dialog()
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:alice@192.0.2.99:5060"  # loose routing: R-URI is the target
    assert bye.values("route") == ["<sip:p2.example.com;lr>",
                                   "<sip:p1.example.com:5070;lr;transport=tcp>"]
    assert target_for_uri(dialog.next_hop()) == Target("udp", "p2.example.com", 5060)
    assert bye.cseq.seq == 1 and bye.to.tag == "a" and bye.from_.tag == "b"


def test_uac_reverses_the_route_set_from_the_2xx() -> None:
    request = parse_message(INVITE.replace(b"Record-Route: <sip:p2.example.com;lr>\r\n"
                                           b"Record-Route: <sip:p1.example.com:5070;lr;"
                                           b"transport=tcp>\r\n", b""))
    assert isinstance(request, Request)
    ok = Response(200, headers=[
        ("Via", request.get("via") or ""), ("Record-Route", "<sip:p2.example.com;lr>"),
        ("Record-Route", "<sip:p1.example.com:5070;lr;transport=tcp>"),
        ("From", request.get("from") or ""), ("To", f"{request.get('to')};tag=b"),
        ("Call-ID", "route-1"), ("CSeq", "1 INVITE"), ("Contact", "<sip:bob@192.0.2.2:5080>")])
    dialog = Dialog.from_uac_response(request, ok, parse_name_addr("<sip:alice@192.0.2.99>"))
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com:5070;lr;transport=tcp", "sip:p2.example.com;lr"]
    assert target_for_uri(dialog.next_hop()) == Target("tcp", "p1.example.com", 5070)
    assert str(dialog.create_request("BYE").uri) == "sip:bob@192.0.2.2:5080"


def test_strict_router_gets_the_request_uri_and_the_target_goes_last() -> None:
    strict = INVITE.replace(b"<sip:p2.example.com;lr>", b"<sip:p2.example.com>")
    dialog = uas_dialog(strict)
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:p2.example.com"
    assert bye.values("route") == ["<sip:p1.example.com:5070;lr;transport=tcp>",
                                   "<sip:alice@192.0.2.99:5060>"]


def test_target_refresh_and_out_of_order_cseq() -> None:
    dialog = uas_dialog()
    reinvite = parse_message(INVITE.replace(b"CSeq: 1", b"CSeq: 2").replace(
        b"To: <sip:bob@biloxi.example.com>", b"To: <sip:bob@biloxi.example.com>;tag=b").replace(
        b"<sip:alice@192.0.2.99:5060>", b"<sip:alice@198.51.100.7:5062>"))
    assert isinstance(reinvite, Request)
    assert dialog.check_remote_cseq(reinvite)
    dialog.refresh_target(reinvite)
    assert dialog.remote_target == parse_sip_uri("sip:alice@198.51.100.7:5062")
    assert not dialog.check_remote_cseq(reinvite)  # the same CSeq again: answer 500


def test_responses_that_create_the_dialog_copy_record_route_in_order() -> None:
    """RFC 3261 §12.1.1: a record-routing proxy (Kamailio) must see the route in 1xx and 2xx."""
    from tests.unit.sipnet import FakeNet
    from warmline.sip.session import IncomingCall
    from warmline.sip.useragent import UserAgent

    net = FakeNet()
    bob = net.add(UserAgent(), "192.0.2.2", 5080)
    invite = INVITE.replace(b"Content-Length: 0", b"Max-Forwards: 70\r\nContent-Length: 0")
    bob.receive(invite, Target("udp", "192.0.2.99", 5060), net.now)
    [incoming] = [e for e in bob.pop_events() if isinstance(e, IncomingCall)]
    bob.ring(incoming.session, net.now)
    bob.answer(incoming.session, b"v=0\r\n", net.now)
    sent = [parse_message(t.data) for t in bob.pop_transmissions()]
    answers = [m for m in sent if isinstance(m, Response) and m.status in (180, 200)]
    assert [m.status for m in answers] == [180, 200]
    for answer in answers:
        assert answer.values("record-route") == ["<sip:p2.example.com;lr>",
                                                 "<sip:p1.example.com:5070;lr;transport=tcp>"]
    errors = [m for m in sent if isinstance(m, Response) and m.status >= 300]
    assert not errors
