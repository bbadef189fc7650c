"""File names in outputs: one faithful, reversible, injective escaping for every file the run writes.

A POSIX file name is a byte string: it may hold line breaks, control characters and bytes that are not
UTF-8 (Python decodes those with ``surrogateescape``, as lone surrogates U+DC80..U+DCFF). None of them can be
written verbatim into a UTF-8 CSV line, a JSON file or a log line, so :func:`escape_name` writes:

=========================================  ==========================================
in the name                                written as
=========================================  ==========================================
a backslash ``\\``                          ``\\\\`` (two backslashes)
newline, carriage return, tab              ``\\n``, ``\\r``, ``\\t``
a byte that is not UTF-8 (e.g. ``0xE9``)    ``\\xe9`` (two lower-case hex digits, 80..ff)
any other control character, U+2028/2029   ``\\u0085`` (four lower-case hex digits)
everything else                            itself (UTF-8)
=========================================  ==========================================

Every backslash in the output starts an escape and every escape stands for exactly one character, so two
different names never give the same text (a real newline is ``\\n``, a literal backslash-n is ``\\\\n``) and
:func:`unescape_name` recovers the original; :func:`name_bytes` gives the file name's bytes back. Ordinary
names (no backslash, no control character, valid UTF-8) are written unchanged.
"""

from __future__ import annotations

import os
import re

#: Characters written with a one-letter escape.
_SIMPLE = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SIMPLE_BACK = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
#: What must be escaped: backslash, C0 controls, DEL, C1 controls, the Unicode line/paragraph separators
#: and every surrogate (surrogateescape bytes and anything else that cannot be encoded as UTF-8).
_UNSAFE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: Characters no escaped name can contain (the same set without the backslash).
_NEVER_ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.)|$)", re.DOTALL)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SIMPLE:
        return _SIMPLE[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the raw byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def escape_name(name: str) -> str:
    """The name as written in ``results.csv``, ``predictions.csv``, ``run.json`` and logs (see the module)."""
    return _UNSAFE.sub(_escape_char, name)


def unescape_name(text: str) -> str:
    """Invert :func:`escape_name`; ValueError for text it cannot have produced."""

    def back(match: re.Match[str]) -> str:
        byte, code, letter = match.groups()
        if byte is not None:
            value = int(byte, 16)
            if value < 0x80:
                raise ValueError(f"{text!r}: \\x{byte} is not an escaped byte (only 80..ff are)")
            return chr(0xDC00 + value)
        if code is not None:
            char = chr(int(code, 16))
            if not _UNSAFE.fullmatch(char) or char in _SIMPLE or 0xDC80 <= ord(char) <= 0xDCFF:
                raise ValueError(f"{text!r}: \\u{code} is not the escape of that character")
            return char
        if letter is None or letter not in _SIMPLE_BACK:
            raise ValueError(f"{text!r}: a backslash must start \\\\, \\n, \\r, \\t, \\xHH or \\uHHHH")
        return _SIMPLE_BACK[letter]

    if _NEVER_ESCAPED.search(text):
        raise ValueError(f"{text!r}: holds characters an escaped name never contains")
    return _ESCAPE.sub(back, text)


def name_bytes(text: str) -> bytes:
    """The original file name's bytes from its escaped text (``os.fsencode`` of :func:`unescape_name`)."""
    return os.fsencode(unescape_name(text))


def as_written(name: str) -> str:
    """``name`` as it can be written to a UTF-8 output: unchanged when it is already an escaped name, else
    escaped (a defensive step for rows built outside discovery: a raw name must never break the file)."""
    return escape_name(name) if _NEVER_ESCAPED.search(name) else name


def printable(text: str) -> str:
    """Free text (a ``reason``, a log message) made safe for UTF-8 outputs: bytes that are not UTF-8 become
    ``\\xHH``, other unencodable or control characters ``\\uHHHH``; backslashes are left alone, so applying
    it twice changes nothing (it is for display, not reversible: names use :func:`escape_name`)."""
    return _NEVER_ESCAPED.sub(_escape_char, text)
