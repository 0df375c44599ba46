"""A softphone on PJSIP (pjsua2-python), run as its own process: a human, or a caller.

    with pjsip_phone(tmp_path / "human", port, ring_ms=300, hangup_after_ms=1500) as phone:
        ...call phone.uri; phone.wait("done"); phone.events("state"), phone.invites()
    with pjsip_phone(tmp_path / "caller", port, dial="sip:ai@127.0.0.1:5070") as caller:
        ...the phone calls warmline at once

``session_expires`` turns on PJSIP's RFC 4028 session timers with that interval.
``srtp`` makes SDES-SRTP mandatory (RTP/SAVP with a=crypto, over plain UDP
signalling); ``tone_hz`` plays a sine into the call and ``record`` writes what
the phone hears to a WAV, so a test can check the audio from both ends.

The phone listens on 127.0.0.1:PORT (UDP) as ``sip:human@127.0.0.1:PORT`` with no
registrar, answers the first INVITE (180, then 200 after ``ring_ms``; a second
one gets 486), hangs up ``hangup_after_ms`` after the call is confirmed (0: waits
for the other side's BYE), and exits half a second after the call ended. It
prints one JSON object a line: ``ready``, ``incoming`` (the raw INVITE as PJSIP
received it), ``state`` (each call state with its last status), ``hangup``,
``done`` (code 0 once a call ended). PJSIP is the stack inside many real
softphones: it copies Record-Route into its responses and routes its ACK/BYE
with the route set.

Bounded: ``lifetime`` inside the phone, `timeout` around it, stopped by PID. The
pjsua2 module is only imported in the phone's own process (one Endpoint per
process); it leaves with ``os._exit`` right after its last line, because
destroying pjsua2 objects late can assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.interop.peers import stop_process

ROOT = Path(__file__).resolve().parents[2]  # `python -m tests.interop.pjsip_phone` runs here


@dataclass
class PjsipPhone:
    port: int
    output: Path
    process: subprocess.Popen[bytes]

    user: str = "human"

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The JSON lines it printed (PJSIP's own start-up lines are skipped)."""
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                if kind is None or event["event"] == kind:
                    found.append(event)
        return found

    def invites(self) -> list[str]:
        return [event["invite"] for event in self.events("incoming")]

    def states(self) -> list[tuple[str, int]]:
        return [(event["state"], event["code"]) for event in self.events("state")]

    def wait(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.events(kind):
                return found[-1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the PJSIP phone printed no {kind!r}:\n{self.text()[-3000:]}")


@contextlib.contextmanager
def pjsip_phone(workdir: Path, port: int, *, ring_ms: int = 300, hangup_after_ms: int = 0,
                lifetime: float = 30.0, dial: str | None = None, session_expires: int = 0,
                user: str = "human", require_100rel: bool = False,
                log_level: int | None = None, srtp: bool = False, tone_hz: int = 0,
                record: Path | None = None) -> Iterator[PjsipPhone]:
    """``log_level`` 4 puts PJSIP's own trace of every SIP message in the phone's log."""
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "pjsip-phone.log"
    handle = output.open("wb")
    process = subprocess.Popen(
        ["timeout", "-k", "2", f"{lifetime + 5:.0f}", sys.executable, "-m", __name__,
         "--port", str(port), "--ring-ms", str(ring_ms),
         "--hangup-after-ms", str(hangup_after_ms), "--lifetime", str(lifetime),
         "--session-expires", str(session_expires), "--user", user,
         "--log-level", str(log_level if log_level is not None
                             else os.environ.get("PJSIP_LOG", "0")),
         *(["--dial", dial] if dial else []),
         *(["--require-100rel"] if require_100rel else []),
         *(["--srtp"] if srtp else []), "--tone-hz", str(tone_hz),
         *(["--record", str(record)] if record else [])],
        stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
    phone = PjsipPhone(port, output, process, user)
    try:
        phone.wait("ready")
        yield phone
    finally:
        stop_process(process, timeout=5)
        handle.close()


# -- the phone's own process -------------------------------------------------------

def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **fields}), flush=True)


def _run_phone(args: argparse.Namespace) -> int:
    import pjsua2 as pj

    @dataclass
    class Phone:
        call: Any = None
        ring_until: float | None = None
        hangup_at: float | None = None
        finished_at: float | None = None

    phone = Phone()
    media_ports: list[Any] = []  # the tone and the recorder, alive as long as the call
    connected: list[int] = []  # the conference ports the tone and recorder were joined to

    class PhoneCall(pj.Call):  # type: ignore[misc]
        def onCallMediaState(self, prm: Any) -> None:  # pjsua2's callback name
            """Also after a re-INVITE that moved the stream (a new conference port)."""
            info = self.getInfo()
            for index, media in enumerate(info.media):
                if media.type == pj.PJMEDIA_TYPE_AUDIO and \
                        media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    audio = self.getAudioMedia(index)
                    if audio.getPortId() not in connected:
                        connected.append(audio.getPortId())
                        _connect_audio(audio)
                    _emit("media", port=audio.getPortId())

        def onCallState(self, prm: Any) -> None:  # pjsua2's callback name
            info = self.getInfo()
            _emit("state", state=info.stateText, code=info.lastStatusCode,
                  reason=info.lastReason)
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED and args.hangup_after_ms:
                phone.hangup_at = time.monotonic() + args.hangup_after_ms / 1000
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED and self is phone.call:
                phone.finished_at = time.monotonic()

    class PhoneAccount(pj.Account):  # type: ignore[misc]
        def onIncomingCall(self, prm: Any) -> None:  # pjsua2's callback name
            call = PhoneCall(self, prm.callId)
            _emit("incoming", invite=prm.rdata.wholeMsg, source=prm.rdata.srcAddress)
            answer = pj.CallOpParam()
            if phone.call is not None:  # one call only
                answer.statusCode = 486
                call.answer(answer)
                return
            phone.call = call
            answer.statusCode = 180
            call.answer(answer)
            phone.ring_until = time.monotonic() + args.ring_ms / 1000

    def _connect_audio(call_audio: Any) -> None:
        if media_ports:  # the stream moved: the same tone and recorder, joined to it
            for port in media_ports:
                if isinstance(port, pj.ToneGenerator):
                    port.startTransmit(call_audio)
                else:
                    call_audio.startTransmit(port)
            return
        if args.tone_hz:
            tone = pj.ToneGenerator()
            tone.createToneGenerator()
            tone_desc = pj.ToneDesc()
            tone_desc.freq1 = tone_desc.freq2 = args.tone_hz
            tone_desc.on_msec, tone_desc.off_msec, tone_desc.volume = 30000, 0, 0
            tones = pj.ToneDescVector()
            tones.append(tone_desc)
            tone.play(tones, True)
            tone.startTransmit(call_audio)
            media_ports.append(tone)
        if args.record:
            recorder = pj.AudioMediaRecorder()
            recorder.createRecorder(args.record)
            call_audio.startTransmit(recorder)
            media_ports.append(recorder)

    deadline = time.monotonic() + args.lifetime
    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "pjsua2-human"
    config.logConfig.level = args.log_level
    config.logConfig.consoleLevel = args.log_level
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.port = args.port
    transport.boundAddress = "127.0.0.1"
    transport.publicAddress = "127.0.0.1"
    endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    endpoint.libStart()
    endpoint.audDevManager().setNullDev()
    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:{args.user}@127.0.0.1:{args.port}"
    if args.require_100rel:  # RFC 3262: its 18x are reliable, and it demands ours to be
        account_config.callConfig.prackUse = pj.PJSUA_100REL_MANDATORY
    if args.session_expires:  # RFC 4028 on, with this interval (PJSIP's floor is 90 s)
        account_config.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
        account_config.callConfig.timerSessExpiresSec = args.session_expires
        account_config.callConfig.timerMinSESec = 90
    if args.srtp:  # SDES only, and without demanding sips: signalling (PJSIP's default)
        account_config.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
        account_config.mediaConfig.srtpSecureSignaling = 0
        keyings = pj.IntVector()
        keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
        account_config.mediaConfig.srtpOpt.keyings = keyings
    media = account_config.mediaConfig.transportConfig
    media.boundAddress = "127.0.0.1"
    media.publicAddress = "127.0.0.1"
    account = PhoneAccount()
    account.create(account_config)
    _emit("ready", uri=account_config.idUri)
    if args.dial:
        phone.call = PhoneCall(account)
        phone.call.makeCall(args.dial, pj.CallOpParam(True))

    code = 1  # no call ended within the lifetime
    while time.monotonic() < deadline:
        endpoint.libHandleEvents(10)
        now = time.monotonic()
        if phone.ring_until is not None and now >= phone.ring_until:
            phone.ring_until = None
            answer = pj.CallOpParam()
            answer.statusCode = 200
            phone.call.answer(answer)
        if phone.hangup_at is not None and now >= phone.hangup_at:
            phone.hangup_at = None
            _emit("hangup")
            phone.call.hangup(pj.CallOpParam())
        # a little longer after the end: answer retransmissions, finish the BYE transaction
        if phone.finished_at is not None and now >= phone.finished_at + 0.5:
            code = 0
            break
    media_ports.clear()  # the recorder writes its WAV header as it is destroyed,
    for _ in range(20):  # which the conference bridge does on its next clock ticks
        endpoint.libHandleEvents(10)
    _emit("done", code=code)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ring-ms", type=int, default=300)
    parser.add_argument("--hangup-after-ms", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=30.0)
    parser.add_argument("--log-level", type=int, default=0)
    parser.add_argument("--session-expires", type=int, default=0)
    parser.add_argument("--user", default="human")
    parser.add_argument("--dial", default=None)
    parser.add_argument("--require-100rel", action="store_true")
    parser.add_argument("--srtp", action="store_true")
    parser.add_argument("--tone-hz", type=int, default=0)
    parser.add_argument("--record", default=None)
    code = _run_phone(parser.parse_args())
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
