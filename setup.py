"""The compiled parts of warmline, built by every install (pip install ., the wheel, -e).

Everything else is in pyproject.toml. Two kinds of C extension, both optional:

- the sans-IO SIP core compiled with mypyc (about 4x the pure-Python speed);
- the relay's pass-through fast path (src/warmline/media/_fastpath.c, with the
  G.722 codec in g722_adpcm.h), which forwards and transcodes bridged RTP
  (G.711, G.722, Opus) without the GIL.

Without a C compiler (or with WARMLINE_PURE=1) the build says so plainly and
installs the pure-Python modules, which are the reference and always work;
`warmline --version` tells which one a machine runs. scripts/build-core runs
this same file (`setup.py build_ext --inplace`) for a source checkout.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# the hot path of every SIP message; the rest of warmline stays interpreted
SIP_CORE = [
    "src/warmline/sip/uri.py", "src/warmline/sip/headers.py", "src/warmline/sip/message.py",
    "src/warmline/sip/transaction.py", "src/warmline/sip/transaction_layer.py",
    "src/warmline/sip/dialog.py", "src/warmline/sip/responses.py",
    "src/warmline/sip/scheduler.py", "src/warmline/sip/ids.py",
    "src/warmline/sip/useragent.py", "src/warmline/sip/access.py",
]
FASTPATH = Extension("warmline.media._fastpath", ["src/warmline/media/_fastpath.c"],
                     depends=["src/warmline/media/g722_adpcm.h"],
                     extra_compile_args=["-O2", "-Wall"], libraries=["m"], optional=True)


def _say(text: str) -> None:
    print(f"warmline build: {text}", file=sys.stderr, flush=True)


def compiled_sip_core() -> list[Extension]:
    """The SIP core's mypyc extensions, or none (pure Python) with the reason said."""
    if os.environ.get("WARMLINE_PURE", "0") == "1":
        _say("WARMLINE_PURE=1: the SIP core stays pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: the SIP core stays pure Python")
        return []
    try:
        extensions: list[Extension] = mypycify(["--config-file", "mypyc.ini", *SIP_CORE],
                                               opt_level="3")
    except Exception as error:  # mypyc refuses code it cannot compile: keep the reference
        _say(f"mypyc could not compile the SIP core ({error}); it stays pure Python")
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: pure Python, not a failed install
    return extensions


class BuildOrFallBack(build_ext):
    """build_ext that says, in one line, what could not be compiled and what runs instead."""

    def run(self) -> None:
        super().run()
        missing = [ext.name for ext in self.extensions if not os.path.exists(
            self.get_ext_fullpath(ext.name))]
        if missing:
            _say(f"not compiled: {', '.join(missing)} (no C compiler, or it failed above); "
                 "those modules run as pure Python: slower, same behaviour")
        else:
            _say(f"compiled {len(self.extensions)} extensions (SIP core and relay fast path)")


if os.environ.get("WARMLINE_PURE", "0") == "1":
    EXTENSIONS: list[Extension] = []
else:
    EXTENSIONS = [*compiled_sip_core(), FASTPATH]
setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": BuildOrFallBack})
