"""Text from the data (feature names, segment values, model ids) made safe to show.

Such text comes from events, so it may hold anything. Printed to a terminal, ESC starts control
sequences (colours, cursor moves, window titles, on some terminals more), CR overwrites what was
printed, and bidirectional overrides reorder what is read; in a chat, control characters garble
the message. visible_controls() turns each into a visible escape (ESC -> \\x1b), so nothing from
the data acts on the display and nothing is hidden either.
"""

import re

# C0 controls, DEL, C1 controls (NEL among them), the Unicode line and paragraph separators,
# and the bidirectional marks, embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match) -> str:
    c = m.group(0)
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def visible_controls(text: str, keep: str = "") -> str:
    """text with every control character written as an escape (\\x1b, \\r, \\n, \\u202e), except
    those in keep (say "\\n" for multi-line text)."""
    if keep:
        return _CONTROL.sub(lambda m: m.group(0) if m.group(0) in keep else _escape(m), text)
    return _CONTROL.sub(_escape, text)
