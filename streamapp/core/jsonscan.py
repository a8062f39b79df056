"""JSON shape checks that never recurse: nesting depth, and a page split without a parser.

A JSON decoder recurses once per level of nesting; a record nested a thousand levels deep
makes it raise ``RecursionError`` for the whole page, so one hostile record would block its
neighbours (and the window's checkpoint) for good. Two tools keep that to one record:

- :func:`nesting_depth` measures how deeply a document nests, in C-speed passes over the
  bytes (no recursion, no Python loop per character), so a record deeper than the limit can
  be put aside before anything decodes it;
- :func:`split_page` cuts an ``/audit/records`` page into its records' bytes with an
  iterative scanner, for the rare page a recursive decoder cannot take whole.

Both work on bytes and are pure; both are bounded by the input's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

#: every byte but the structural ones that matter for depth: brackets, braces and quotes
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_BRACES_TO_BRACKETS = bytes.maketrans(b"{}", b"[]")
_STRING_BODY = re.compile(rb'"[^"]*"')
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)


def _skeleton(data: bytes) -> bytes:
    """The brackets of ``data`` outside strings, braces written as brackets."""
    # in JSON every backslash starts an escape: drop escaped backslashes first, then every
    # remaining backslash-quote is an escaped quote; what is left of each string is quotes
    # around non-structural text
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = text.translate(None, _NOT_STRUCTURE)
    if b'"' in text:
        text = _STRING_BODY.sub(b"", text)
    return text.translate(_BRACES_TO_BRACKETS)


def nesting_depth(data: bytes, limit: int) -> int:
    """How many levels of arrays and objects ``data`` nests, or ``limit + 1`` if more.

    ``{"a": [1]}`` nests 2 levels, a scalar 0. Meant for JSON; on other input the answer is
    a bound, not a diagnosis. Each pass removes the innermost pairs, so the work is at most
    ``limit + 1`` passes over the (already reduced) bytes.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    skeleton = _skeleton(data)
    if b"[" * (limit + 1) in skeleton:
        return limit + 1
    for depth in range(limit + 1):
        if not skeleton:
            return depth
        reduced = skeleton.replace(b"[]", b"")
        if reduced == skeleton:  # unbalanced: nothing more to take apart
            return depth
        skeleton = reduced
    return limit + 1 if skeleton else limit


class NotAPage(ValueError):
    """The bytes are not an audit-records page (a one-line reason)."""


@dataclass(frozen=True)
class SplitPage:
    """A page taken apart without decoding its records."""

    records: list[bytes]
    next_cursor: str | None
    limit: int | None
    #: the ``id`` of each record when it is a plain top-level string, else None
    ids: list[str | None]


_decode_cursor = msgspec.json.Decoder(str | None).decode
_decode_limit = msgspec.json.Decoder(int | None).decode
_decode_string = msgspec.json.Decoder(str).decode


def split_page(body: bytes, *, max_depth: int = 64) -> SplitPage:
    """``{"records": [...], "next_cursor": ..., "limit": ...}`` cut into raw records.

    Iterative: any depth is fine. Raises NotAPage when the top level is not an object with a
    ``records`` array or the brackets do not balance. Other top-level keys are ignored.
    """
    return _PageScanner(body, max_depth).scan()


class _PageScanner:
    """The state of one :func:`split_page`: a walk over the body's tokens that cuts records
    out at depth 2 and notes each record's top-level ``id`` at depth 3."""

    def __init__(self, body: bytes, max_depth: int) -> None:
        self.body = body
        self.max_depth = max_depth
        self.depth = 0
        self.records: list[bytes] = []
        self.ids: list[str | None] = []
        self.found_records = False
        self.cursor: str | None = None
        self.limit: int | None = None
        self.key: bytes | None = None  # the top-level key whose value is being read
        self.expect_key = False
        self.value_start = 0
        self.element_start = -1
        self.element_id: str | None = None
        self.record_key: bytes | None = None  # the key just read at the top of a record
        self.expect_record_key = False
        self.awaiting_id = False

    def scan(self) -> SplitPage:
        for match in _TOKEN.finditer(self.body):
            token = match.group()
            if self.depth == 0:
                if token != b"{":
                    raise NotAPage("the body is not a JSON object")
                self.depth, self.expect_key = 1, True
            elif token[:1] == b'"':
                self._string(token)
            elif token == b":":
                self._colon(match.end())
            elif token == b",":
                self._comma(match.start(), match.end())
            elif token in (b"[", b"{"):
                self._open(token, match.end())
            else:
                self.depth -= 1
                if self.depth == 0:
                    return self._finish(match.start(), match.end())
                self._close(match.start())
        raise NotAPage("the body ends before its top-level object does")

    def _string(self, token: bytes) -> None:
        if self.depth == 1 and self.expect_key:
            self.key, self.expect_key = token, False
        elif self.depth == 3 and self.expect_record_key:
            self.record_key, self.expect_record_key = token, False
        elif self.depth == 3 and self.awaiting_id:
            try:
                self.element_id = _decode_string(token)
            except msgspec.DecodeError:
                self.element_id = None
            self.awaiting_id = False

    def _colon(self, end: int) -> None:
        if self.depth == 1:
            self.value_start = end
        elif self.depth == 3 and self.record_key is not None:
            self.awaiting_id = self.record_key == b'"id"'
            self.record_key = None

    def _comma(self, start: int, end: int) -> None:
        if self.depth == 1:
            self._top_level_value(start)
            self.key, self.expect_key = None, True
        elif self.depth == 2 and self.key == b'"records"':
            self.records.append(self.body[self.element_start : start].strip())
            self.ids.append(self.element_id)
            self.element_start, self.element_id = end, None
        elif self.depth == 3 and self.element_start >= 0:
            self.record_key, self.awaiting_id, self.expect_record_key = None, False, True

    def _open(self, token: bytes, end: int) -> None:
        if self.depth == 1 and self.key == b'"records"':
            if token != b"[":
                raise NotAPage("`records` is not an array")
            self.found_records = True
            self.element_start, self.element_id = end, None
        elif self.depth == 2 and self.key == b'"records"':  # a record begins
            self.record_key, self.awaiting_id = None, False
            self.expect_record_key = token == b"{"
        elif self.depth == 3:
            self.awaiting_id = False
        self.depth += 1

    def _close(self, start: int) -> None:
        """A closing bracket or brace below the top level (depth already lowered)."""
        if self.depth == 1 and self.key == b'"records"':
            last = self.body[self.element_start : start].strip()
            if last:
                self.records.append(last)
                self.ids.append(self.element_id)
            elif self.records:
                raise NotAPage("a trailing comma in `records`")
            self.element_start = -1

    def _finish(self, start: int, end: int) -> SplitPage:
        """The top-level object closed at ``start``."""
        self._top_level_value(start)
        if self.body[end:].strip():
            raise NotAPage("text after the top-level object")
        if not self.found_records:
            raise NotAPage("no `records` array")
        return SplitPage(
            records=self.records, next_cursor=self.cursor, limit=self.limit, ids=self.ids
        )

    def _top_level_value(self, end: int) -> None:
        """The value of the top-level key just read ends at ``end``: keep the cursor and
        limit."""
        value = self.body[self.value_start : end]
        _top_value(self.key, value, self.max_depth)
        if self.key == b'"next_cursor"':
            self.cursor = _cursor(value)
        elif self.key == b'"limit"':
            self.limit = _limit(value)


def _top_value(key: bytes | None, value: bytes, max_depth: int) -> None:
    if key in (b'"next_cursor"', b'"limit"') and nesting_depth(value, max_depth) > max_depth:
        name = key.decode().strip('"') if key else ""
        raise NotAPage(f"`{name}` nests too deeply")


def _cursor(value: bytes) -> str | None:
    try:
        return _decode_cursor(value.strip())
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise NotAPage("`next_cursor` is neither a string nor null") from None


def _limit(value: bytes) -> int | None:
    try:
        return _decode_limit(value.strip())
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise NotAPage("`limit` is neither an integer nor null") from None
