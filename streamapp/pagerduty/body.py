"""One HTTP exchange with hard bounds: a deadline for all of it and a cap on the body's size.

httpx applies its timeout to each read, so a server that sends a byte every few seconds
keeps a request alive for ever; and it inflates a compressed body in one step, so a small
gzip answer can become gigabytes in memory. Here:

- the whole exchange (connect, request, headers, every byte of the body) runs under one
  deadline; past it the exchange is abandoned and the connection closed;
- the body is read as it arrives and refused once it passes ``max_bytes`` on the wire or
  ``max_decoded`` after decompression; decompression is ours, in steps of bounded output
  (gzip and deflate; any other encoding is refused), so memory never holds more than the
  cap plus one chunk.

Errors are those of ``streamapp.core.errors``; none is chained to an httpx exception.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httpx

from streamapp.core.errors import PagerDutyError, ProtocolError, RequestTimeout, ResponseTooLarge
from streamapp.pagerduty.retry import transport_error

#: what we accept on the wire; decoded by ``_Inflater``
ACCEPT_ENCODING = "gzip, deflate"
#: how much of an error answer (4xx/5xx) is read, for PagerDuty's message in it
ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    #: seconds for the whole exchange: connect, headers and the full body
    deadline: float = 30.0
    #: bytes of body on the wire
    max_bytes: int = 16 * 1024 * 1024
    #: bytes of body after decompression
    max_decoded: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes


class _Inflater:
    """Incremental gzip/deflate decoding whose output per call is capped."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._deflate_raw = False
        self._obj = self._new()

    def _new(self) -> zlib._Decompress:
        if self.encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS if self._deflate_raw else zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """Decode ``data``; return at most ``room + 1`` bytes (one more means: over the cap)."""
        out = bytearray()
        pending = data
        while pending and len(out) <= room:
            try:
                chunk = self._obj.decompress(pending, room + 1 - len(out))
            except zlib.error:
                if self.encoding == "deflate" and not self._deflate_raw and not out:
                    # some servers send raw deflate without the zlib header
                    self._deflate_raw = True
                    self._obj = self._new()
                    continue
                raise
            out += chunk
            if self._obj.unconsumed_tail:
                pending = self._obj.unconsumed_tail
            elif self._obj.eof and self._obj.unused_data:
                pending = self._obj.unused_data  # another gzip member follows
                self._obj = self._new()
            else:
                pending = b""
        return bytes(out)


def _decoder(headers: httpx.Headers, what: str) -> _Inflater | None:
    codings = [c.strip().lower() for c in headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater(codings[0])
    raise ProtocolError(
        f"{what} answered with Content-Encoding {', '.join(codings)!r}, which this client"
        " does not decode (it asks for gzip or deflate)"
    )


async def _read(
    chunks: AsyncIterator[bytes], inflater: _Inflater | None, limits: Limits, what: str
) -> bytes:
    wire = 0
    body = bytearray()
    async for chunk in chunks:
        wire += len(chunk)
        if wire > limits.max_bytes:
            raise ResponseTooLarge(
                f"{what} sent a body of more than {limits.max_bytes:,} bytes"
                " (STREAMAPP_HTTP_MAX_RESPONSE_BYTES); the answer was abandoned"
            )
        if inflater is None:
            body += chunk
            continue
        try:
            body += inflater.feed(chunk, limits.max_decoded - len(body))
        except zlib.error as exc:
            raise ProtocolError(
                f"{what} sent a {inflater.encoding} body that does not decode ({exc})"
            ) from None
        if len(body) > limits.max_decoded:
            raise ResponseTooLarge(
                f"{what} sent a {inflater.encoding} body that inflates past"
                f" {limits.max_decoded:,} bytes (STREAMAPP_HTTP_MAX_RESPONSE_BYTES); the"
                " answer was abandoned"
            )
    return bytes(body)


async def exchange(
    http: httpx.AsyncClient,
    url: str,
    *,
    params: Iterable[tuple[str, str]],
    headers: dict[str, str],
    limits: Limits,
    what: str,
    hide: Iterable[str] = (),
) -> Answer:
    """GET ``url`` and read the whole answer within ``limits``.

    ``what`` names the far end for messages (host only); ``hide`` are strings (the token)
    that must never appear in one.
    """
    failure: PagerDutyError | None = None
    try:
        async with asyncio.timeout(limits.deadline):
            async with http.stream(
                "GET",
                url,
                params=list(params),
                headers={**headers, "Accept-Encoding": ACCEPT_ENCODING},
                timeout=limits.deadline,
                follow_redirects=False,  # never carry the token to another host
            ) as response:
                status = response.status_code
                capped = limits
                if not 200 <= status < 300:
                    small = min(ERROR_BODY_BYTES, limits.max_bytes)
                    capped = Limits(limits.deadline, small, min(small, limits.max_decoded))
                declared = response.headers.get("content-length", "").strip()
                if declared.isdigit() and int(declared) > capped.max_bytes and 200 <= status < 300:
                    raise ResponseTooLarge(
                        f"{what} announced a body of {int(declared):,} bytes, more than"
                        f" {capped.max_bytes:,} (STREAMAPP_HTTP_MAX_RESPONSE_BYTES); the"
                        " answer was not read"
                    )
                inflater = _decoder(response.headers, what)
                try:
                    body = await _read(response.aiter_raw(), inflater, capped, what)
                except ResponseTooLarge:
                    if 200 <= status < 300:
                        raise
                    body = b""  # an oversized error answer: its status still says enough
                return Answer(status, response.headers, body)
    except PagerDutyError as exc:
        failure = exc
    except TimeoutError:
        failure = RequestTimeout(
            f"{what} did not complete an answer within {limits.deadline:g} s (the deadline"
            " for connect, headers and body, STREAMAPP_HTTP_TIMEOUT); retrying later"
        )
    except (httpx.RequestError, OSError) as exc:
        failure = transport_error(exc, what=what, hide=hide)
    raise failure
