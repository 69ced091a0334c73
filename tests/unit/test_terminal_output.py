"""Names from the data printed by the CLI (`mlvigil history` tables and CSV) reach the terminal with
every control character escaped: no ESC sequence, CR, BEL, DEL, C1 control or bidirectional
override acts on the display, and nothing is dropped either."""

import csv
import io
import unicodedata
from datetime import datetime

from mlvigil.history import format_csv, format_table
from mlvigil.safetext import visible_controls

BIDI = {chr(c) for c in [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
HOSTILE = [
    "age\x1b[2J\x1b[31m",  # clear screen, red
    "income\rFAKE",  # CR: overwrite what was printed
    "x\x1b]0;pwned\x07",  # OSC: set the window title, BEL
    "\x9b31mcsi",  # C1 CSI
    "del\x7f",
    "evil\u202etxt.exe",  # right-to-left override
    "tab\there\nnext",
    "ok_name",
]


def unsafe(text: str, allowed: str = "") -> list[str]:
    """Characters that act on a terminal, found independently of the code under test."""
    return [
        c
        for c in text
        if c not in allowed
        and (unicodedata.category(c) == "Cc" or c in BIDI or unicodedata.category(c) in ("Zl", "Zp"))
    ]


def test_every_control_character_is_escaped_visibly():
    every = "".join(chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]) + "".join(BIDI)
    out = visible_controls(every)
    assert unsafe(out) == []
    assert out.count("\\") == len(every), "one visible escape per character: nothing dropped"
    assert visible_controls("a\x1b[31mb\rc") == "a\\x1b[31mb\\rc"
    assert visible_controls("evil\u202etxt") == "evil\\u202etxt"
    assert visible_controls("line 1\nline 2\x1b", keep="\n") == "line 1\nline 2\\x1b"
    assert visible_controls("plain text, ünïcödé, 中文") == "plain text, ünïcödé, 中文"


def rows() -> list[tuple]:
    t = datetime(2026, 11, 30, 12, 0)
    return [(t, "v1", "*", name, 0.5) for name in HOSTILE]


def test_history_table_escapes_names_and_stays_aligned():
    out = format_table(["window_start", "model_version", "segment", "feature", "psi"], rows(), "minute")
    lines = out.split("\n")
    assert lines[-1] == "" and len(lines) == len(HOSTILE) + 2  # header, one line per row, final newline
    assert unsafe(out, allowed="\n") == []
    assert len({len(line) for line in lines[:-1]}) == 1, "columns line up: every escape is plain text"
    for name in HOSTILE:
        assert visible_controls(name) in out  # shown, not dropped
    assert "FAKE" in out and "\\r" in out


def test_history_csv_escapes_names():
    out = format_csv(["window_start", "model_version", "segment", "feature", "psi"], rows())
    assert unsafe(out, allowed="\n") == []
    parsed = list(csv.reader(io.StringIO(out)))
    assert [r[3] for r in parsed[1:]] == [visible_controls(n) for n in HOSTILE]
    assert all(len(r) == 5 for r in parsed)
