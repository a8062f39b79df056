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
    tokens = _TOKEN.finditer(body)
    depth = 0
    records: list[bytes] = []
    ids: list[str | None] = []
    found_records = False
    cursor: str | None = None
    page_limit: int | None = None
    key: bytes | None = None  # the top-level key whose value is being read
    expect_key = False
    value_start = 0
    element_start = -1
    element_id: str | None = None
    record_key: bytes | None = None  # the key just read at the top of the current record
    expect_record_key = False
    awaiting_id = False
    for match in tokens:
        token = match.group()
        first = token[:1]
        if depth == 0:
            if token != b"{":
                raise NotAPage("the body is not a JSON object")
            depth = 1
            expect_key = True
            continue
        if first == b'"':
            if depth == 1 and expect_key:
                key = token
                expect_key = False
            elif depth == 3 and expect_record_key:
                record_key, expect_record_key = token, False
            elif depth == 3 and awaiting_id:
                try:
                    element_id = _decode_string(token)
                except msgspec.DecodeError:
                    element_id = None
                awaiting_id = False
            continue
        if token == b":":
            if depth == 1:
                value_start = match.end()
            elif depth == 3 and record_key is not None:
                awaiting_id = record_key == b'"id"'
                record_key = None
            continue
        if token == b",":
            if depth == 1:
                _top_value(key, body[value_start : match.start()], max_depth)
                if key == b'"next_cursor"':
                    cursor = _cursor(body[value_start : match.start()])
                elif key == b'"limit"':
                    page_limit = _limit(body[value_start : match.start()])
                key = None
                expect_key = True
            elif depth == 2 and key == b'"records"':
                records.append(body[element_start : match.start()].strip())
                ids.append(element_id)
                element_start, element_id = match.end(), None
            elif depth == 3 and element_start >= 0:
                record_key, awaiting_id, expect_record_key = None, False, True
            continue
        if token in (b"[", b"{"):
            if depth == 1 and key == b'"records"':
                if token != b"[":
                    raise NotAPage("`records` is not an array")
                found_records = True
                element_start, element_id = match.end(), None
            elif depth == 2 and key == b'"records"':  # a record begins
                record_key, awaiting_id, expect_record_key = None, False, token == b"{"
            elif depth == 3:
                awaiting_id = False
            depth += 1
            continue
        # a closing bracket or brace
        depth -= 1
        if depth == 0:
            _top_value(key, body[value_start : match.start()], max_depth)
            if key == b'"next_cursor"':
                cursor = _cursor(body[value_start : match.start()])
            elif key == b'"limit"':
                page_limit = _limit(body[value_start : match.start()])
            if body[match.end() :].strip():
                raise NotAPage("text after the top-level object")
            if not found_records:
                raise NotAPage("no `records` array")
            return SplitPage(records=records, next_cursor=cursor, limit=page_limit, ids=ids)
        if depth == 1 and key == b'"records"':
            last = body[element_start : match.start()].strip()
            if last:
                records.append(last)
                ids.append(element_id)
            elif records:
                raise NotAPage("a trailing comma in `records`")
            element_start = -1
    raise NotAPage("the body ends before its top-level object does")


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
