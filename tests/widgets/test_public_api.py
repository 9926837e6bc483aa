"""The widgets and demo() drive Client, Server and FaultProxy through public API only."""

from __future__ import annotations

import re
from pathlib import Path

import wsnb

ROOT = Path(wsnb.__file__).parent
SOURCES = sorted((ROOT / "widgets").glob("*.py")) + [ROOT / "demo.py"]

#: ``x._loop``, ``x._token``, ``x._timeline`` on anything but ``self``; a Link's privates.
PRIVATE_ATTR = re.compile(r"\.(_loop|_token|_timeline)\b")
ON_SELF = re.compile(r"(?<![\w.)\]])self$")
LINK_PRIVATE = re.compile(r"\.link\._\w*")
#: Live sessions' links are the server's business (use Server.set_processing).
LINK_KNOBS = re.compile(r"\.link\.(workers|process_delay)\b")


def offences(source: str) -> list[str]:
    found = []
    for n, line in enumerate(source.splitlines(), 1):
        for m in PRIVATE_ATTR.finditer(line):
            if not ON_SELF.search(line[:m.start()]):
                found.append(f"{n}: {line.strip()}")
        found += [f"{n}: {line.strip()}" for _ in LINK_PRIVATE.finditer(line)]
        found += [f"{n}: {line.strip()}" for _ in LINK_KNOBS.finditer(line)]
    return found


def test_the_checker_catches_private_access() -> None:
    bad = ("loop = client._loop\nc._token = t\nproxy._timeline\nx = self.client._loop\n"
           "session.link._pump()\nsession.link.workers = 4\nf(x)._loop\nitself._loop\n")
    assert len(offences(bad)) == 8
    assert offences("self._loop = loop\nR(self._loop)\nself._token = t\nclient.loop\n") == []


def test_widgets_and_demo_use_public_api_only() -> None:
    assert len(SOURCES) > 5
    found = {path.name: hits for path in SOURCES
             if (hits := offences(path.read_text(encoding="utf-8")))}
    assert found == {}
