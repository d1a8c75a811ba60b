"""A lean HTTP/1.1 keep-alive client for the load generator: prebuilt request bytes, one
request in flight per connection, responses framed by Content-Length.

On 2 cores the client shares the CPU with the server it measures: every microsecond of Python
per request (aiohttp's or tritonclient's request building and parsing) is taken from the
server. Prebuilt bytes on one asyncio loop keep the client's share small. It is no general
client: no chunked bodies, no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class HTTPStatusError(RuntimeError):
    pass


def request_bytes(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete POST request for `url` (http://host:port/path) with `body`."""
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("response without Content-Length (chunked bodies are not supported)")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end])
        try:
            total = end + 4 + _content_length(head)
        except ValueError as e:
            self.waiter.set_exception(e)
            return
        if len(self.buffer) >= total:
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.waiter.set_result((head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("server closed the connection"))

    async def exchange(self, payload: bytes) -> tuple[bytes, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


class RawHTTPClient:
    """POST prebuilt requests over a pool of kept-alive connections, in turn (several bodies:
    the same images are not sent every time); `post()` returns the response (head, body) or
    raises HTTPStatusError on a status other than 200."""

    def __init__(
        self, url: str, requests: list[tuple[bytes, dict[str, str]]], ports: list[int] | None = None
    ):
        """`requests`: (body, headers) pairs, posted one after the other, round and round.
        `ports`: servers on these ports of the url's host take the connections in turn (a
        server of several processes, one a port), so each gets the same share of the load."""
        parts = urlsplit(url)
        self.host = parts.hostname
        self.ports = ports or [parts.port or 80]
        self.payloads = [request_bytes(url, body, headers) for body, headers in requests]
        self.posted = 0
        self.idle: list[_Connection] = []
        self.all: list[_Connection] = []
        self.opened = 0

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        port = self.ports[self.opened % len(self.ports)]
        self.opened += 1
        _, conn = await loop.create_connection(_Connection, self.host, port)
        self.all.append(conn)
        return conn

    async def post(self) -> tuple[bytes, bytes]:
        conn = self.idle.pop() if self.idle else await self._connect()
        payload = self.payloads[self.posted % len(self.payloads)]
        self.posted += 1
        try:
            head, body = await conn.exchange(payload)
        except BaseException:
            conn.transport.close()  # a half-read answer would poison the next request
            self.all.remove(conn)
            raise
        if conn.closed:
            self.all.remove(conn)
        else:
            self.idle.append(conn)
        if head[9:12] != b"200":
            answer = body[:200].decode(errors="replace")
            raise HTTPStatusError(f"HTTP {head[9:12].decode()}: {answer}")
        return head, body

    async def close(self) -> None:
        for conn in self.all:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()
        self.all.clear()
