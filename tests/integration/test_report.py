"""`mlvigil report` writes one self-contained HTML page; headless Chromium (Debian's chromium,
installed by scripts/setup.sh), with every host name unresolvable, renders it: the screenshot
is not blank and shows the charts' colours down the page, the rendered DOM holds the three
views with their charts, and nothing is logged to the page's console."""

import re
import shutil
import struct
import subprocess
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from mlvigil.report import PALETTE
from tests.integration.test_history import MINUTES, T0, seed_store

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEIGHT = 7200  # the whole page at 1280 px wide


def read_png(path: Path) -> np.ndarray:
    """An 8-bit RGB or RGBA PNG as a (height, width, 3) array, decoded with zlib and numpy."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), np.uint8)
    prev = np.zeros(width * bpp, np.uint8)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].copy()
        if f == 1:  # Sub: a running sum per channel, modulo 256
            line = (np.cumsum(line.reshape(width, bpp).astype(np.int64), axis=0) & 255).astype(np.uint8).ravel()
        elif f == 2:  # Up
            line = line + prev
        elif f in (3, 4):  # Average, Paeth: sequential along the row
            cur, up = line.tolist(), prev.tolist()
            for i in range(len(cur)):
                a = cur[i - bpp] if i >= bpp else 0
                b = up[i]
                if f == 3:
                    cur[i] = (cur[i] + (a + b) // 2) & 255
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    pp = a + b - c
                    pa, pb, pc = abs(pp - a), abs(pp - b), abs(pp - c)
                    cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            line = np.array(cur, np.uint8)
        out[y] = prev = line
    return out.reshape(height, width, bpp)[:, :, :3]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
         "--v=1", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the page must not need it
         *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from mlvigil.cli import main

    tmp = tmp_path_factory.mktemp("report")
    s = seed_store(tmp / "clickhouse")
    out = tmp / "report.html"
    end = T0 + timedelta(minutes=MINUTES)
    assert main(["report", "--clickhouse-url", s.url, "--model", "recsys", "--from", T0.isoformat(),
                 "--to", end.isoformat(), "--out", str(out)]) == 0  # fmt: skip
    return tmp, out


def test_report_is_self_contained(report):
    _, out = report
    page = out.read_text()
    for view in ("overview", "data-drift", "model-performance"):
        assert f'<section id="{view}">' in page
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(", page, re.I)
    assert set(re.findall(r"https?://[^\"' )<]+", page)) == {"http://www.w3.org/2000/svg"}  # the SVG namespace only
    assert page.count("<svg") >= 20
    # the numbers come from the store: the worst window of v1's age drift is flagged, v2's is not
    worst = re.findall(
        r'<td class="">age</td><td class="">numeric</td><td class="\w*">[^<]*</td><td class="(\w+)">', page
    )
    assert worst == ["bad", "ok"]
    assert "Bins of age: current vs reference" in page and "Accuracy by segment and version" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/setup.sh installs it)")
def test_report_renders_in_headless_chromium(report):
    tmp, out = report
    url = out.resolve().as_uri()
    shot = tmp / "report.png"
    r = chromium(
        tmp, f"--screenshot={shot}", f"--window-size=1280,{HEIGHT}", "--run-all-compositor-stages-before-draw", url
    )
    assert shot.exists(), r.stderr[-2000:]
    # Nothing on the page's console (Chromium logs every console message as INFO:CONSOLE).
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    control = tmp / "control.html"  # the check sees a console error when there is one
    control.write_text("<p>x</p><script>console.error('control-error')</script>")
    assert "control-error" in chromium(tmp, "--dump-dom", control.as_uri()).stderr

    img = read_png(shot)
    assert img.shape == (HEIGHT, 1280, 3)
    colours, counts = np.unique(img[::4, ::4].reshape(-1, 3), axis=0, return_counts=True)
    assert counts.max() / counts.sum() < 0.9, "the screenshot is (almost) one colour"
    assert len(colours) > 50
    # The charts' colours are on screen, from the top of the page down to the last view.
    for colour in PALETTE[:2]:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
        ys = np.nonzero((img == rgb).all(axis=2).any(axis=1))[0]
        assert len(ys) > 200, (colour, len(ys))
        assert ys[0] < 800 and ys[-1] - ys[0] > 4000, (colour, ys[0], ys[-1])

    dom = chromium(tmp, "--dump-dom", url).stdout
    sections = re.findall(r'<section id="([\w-]+)">(.*?)</section>', dom, re.S)
    assert [s[0] for s in sections] == ["overview", "data-drift", "model-performance"]
    for name, body in sections:
        assert body.count("<svg") >= 3 and ("<path" in body or "<rect x=" in body), name
