"""Finding where a JSON value ends while its bytes stream past, holding none of them.

A record too large to decode is skipped rather than read: the skipper follows only the nesting depth and whether it
is inside a string (and after a backslash there), so the records after it in the same log file are still read and
memory does not grow with the record. Inside a string it jumps to the next quote or backslash with one regular
expression search (C speed); between strings it stops at each bracket. The caller bounds how many bytes it skips.

It does not validate: ``{]`` counts as balanced, and a value that is not an object or array (a huge string or number
in the Records array) ends at the comma or bracket after it. The record is refused by its size whatever it holds;
the records around it are decoded, and validated, normally.
"""

from __future__ import annotations

import re

_STRUCTURE = re.compile(rb'[{}\[\]"]')
_TOP_LEVEL = re.compile(rb'[{}\[\]",]')  # outside any container a comma or a closing bracket ends a scalar
_STRING_STOP = re.compile(rb'["\\]')
_QUOTE = ord('"')
_OPENERS = (ord("{"), ord("["))


class ValueSkipper:
    """The state of one JSON object or array being skipped: nesting depth, inside a string, after a backslash."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def end_in(self, data: bytes | bytearray | memoryview) -> int | None:
        """Where the value ends in ``data`` (just past its closing bracket or string; at the comma or bracket after
        a number), or None when it goes on after ``data``, which continues the bytes of earlier calls."""
        position: int | None = 0
        while position is not None:
            if self.in_string:
                position = self._past_string(data, position)
                if position is not None and self.depth == 0:
                    return position  # a string value
                continue
            found = (_STRUCTURE if self.depth else _TOP_LEVEL).search(data, position)
            if found is None:
                return None
            position = found.end()
            byte = data[found.start()]
            if byte == _QUOTE:
                self.in_string = True
            elif byte in _OPENERS:
                self.depth += 1
            elif self.depth == 0:
                return found.start()  # a comma or closing bracket after a scalar
            else:
                self.depth -= 1
                if self.depth == 0:
                    return position
        return None

    def _past_string(self, data: bytes | bytearray | memoryview, position: int) -> int | None:
        """Just past the closing quote of the string being skipped, or None when it goes on after ``data``."""
        if self.escaped:
            if position >= len(data):
                return None
            position, self.escaped = position + 1, False
        while (stop := _STRING_STOP.search(data, position)) is not None:
            position = stop.end()
            if data[stop.start()] == _QUOTE:
                self.in_string = False
                return position
            if position == len(data):
                self.escaped = True  # the escaped byte comes in the next block
                return None
            position += 1
        return None
