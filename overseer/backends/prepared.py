"""One POST endpoint prepared once, each body sent straight through the client's connection pool.

The openai client's ``post`` builds the same request again on every call: it merges its auth and
default headers, joins the base URL, builds an ``httpx2.Request``; the ``httpx2.Client`` merges its
own headers, runs its auth and redirect machinery and wraps the reply twice. For one endpoint and
one timeout all that comes out the same each time: about 0.4 ms of CPU per call, under the GIL.

``PreparedPost`` keeps what a request built once by the client holds (URL, headers, timeout) and
sends each body through the httpcore pool of the client's transport for that URL: the same
connections, the same proxy, the same network backend (so a cancel still aborts the socket), and
httpx2's own mapping of httpcore errors, with the request set on them as the client sets it.
What it does not do, the caller does on the rare replies that need it: a redirect is not followed
(``Reply.redirect``) and a status error is not raised (``Reply.response`` gives the
``httpx2.Response`` to raise it from). No cookie is stored or sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

__all__ = ["PreparedPost", "Reply"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PER_BODY = frozenset({b"content-length", b"transfer-encoding"})
_HTTPCORE_ERRORS = (
    httpcore2.TimeoutException,
    httpcore2.NetworkError,
    httpcore2.ProxyError,
    httpcore2.UnsupportedProtocol,
    httpcore2.ProtocolError,
)

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Reply:
    """A whole reply: status, raw headers and the body as it came off the wire."""

    status: int
    headers: Headers
    content: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def redirect(self) -> bool:
        """A redirect the ``httpx2.Client`` would follow (the SDK's client follows them)."""
        return self.status in _REDIRECTS and self._header(b"location") is not None

    @property
    def text(self) -> str:
        """The body as ``httpx2.Response.text`` reads it: decompressed, in the charset the
        content type names (UTF-8 when it names none), undecodable bytes replaced."""
        if self._plain_utf8():
            return self.content.decode("utf-8", errors="replace")
        return httpx2.Response(self.status, headers=self.headers, content=self.content).text

    def response(self, request: httpx2.Request) -> httpx2.Response:
        """The ``httpx2.Response`` the client would have returned (read, closed)."""
        return httpx2.Response(
            self.status, headers=self.headers, content=self.content, request=request
        )

    def _header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def _plain_utf8(self) -> bool:
        """Whether the body is UTF-8 as it stands: not compressed, no other charset named."""
        encoding = self._header(b"content-encoding")
        if encoding is not None and encoding.lower() != b"identity":
            return False
        content_type = (self._header(b"content-type") or b"").lower()
        _, named, charset = content_type.partition(b"charset=")
        return not named or charset.split(b";")[0].strip(b' "') in (b"utf-8", b"utf8")


class PreparedPost:
    """Sends bodies as ``template`` would go (its URL, headers and timeout), through ``pool``.

    A body sent with a ``timeout`` of its own goes with that timeout instead, in the request's
    extensions (all four phases, as ``httpx2.Timeout(timeout)``) and, when there is a
    ``timeout_header``, as that header's value (``str(timeout)``)."""

    def __init__(
        self,
        template: httpx2.Request,
        pool: httpcore2.ConnectionPool,
        *,
        timeout_header: bytes | None = None,
    ) -> None:
        url = template.url
        self._template = template
        self._pool = pool
        self._url = httpcore2.URL(
            scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
        )
        self._headers = [(k, v) for k, v in template.headers.raw if k.lower() not in _PER_BODY]
        self._extensions: dict[str, Any] = dict(template.extensions)
        self._timeout_header = timeout_header

    @classmethod
    def through(
        cls, client: httpx2.Client, template: httpx2.Request, *, timeout_header: bytes | None = None
    ) -> PreparedPost | None:
        """The prepared POST over ``client``'s pool for ``template``'s URL, or None when that
        transport is not an ``httpx2.HTTPTransport`` over an httpcore pool (a mounted or mocked
        transport): such a client is only reached through its own ``send``."""
        transport = client._transport_for_url(template.url)
        pool = getattr(transport, "_pool", None)
        if type(transport) is not httpx2.HTTPTransport or not isinstance(
            pool, httpcore2.ConnectionPool
        ):
            return None
        return cls(template, pool, timeout_header=timeout_header)

    @property
    def url(self) -> httpx2.URL:
        return self._template.url

    def send(self, body: bytes, timeout: float | None = None) -> Reply:
        """POST ``body`` and read the whole reply; raises ``httpx2.RequestError`` subclasses
        (``httpx2.TimeoutException`` for timeouts), each with ``request`` set."""
        headers, extensions = self._head(body, timeout)
        request = httpcore2.Request(
            b"POST", self._url, headers=headers, content=body, extensions=extensions
        )
        try:
            response = self._pool.handle_request(request)
            try:
                content = response.read()
            finally:
                response.close()
        except _HTTPCORE_ERRORS as exc:
            raise _as_httpx_error(exc, self.request(body, timeout)) from exc
        return Reply(response.status, response.headers, content)

    def request(self, body: bytes, timeout: float | None = None) -> httpx2.Request:
        """The ``httpx2.Request`` that ``send(body, timeout)`` stands for (for errors)."""
        headers, extensions = self._head(body, timeout)
        url = self._template.url
        return httpx2.Request("POST", url, headers=headers, content=body, extensions=extensions)

    def _head(self, body: bytes, timeout: float | None) -> tuple[Headers, dict[str, Any]]:
        """The headers and extensions of one body's request."""
        length = (b"Content-Length", b"%d" % len(body))
        if timeout is None:
            return [*self._headers, length], self._extensions
        named = self._timeout_header
        headers = [(k, v) for k, v in self._headers if k.lower() != named]
        if named is not None:
            headers.append((named, str(timeout).encode()))
        extensions = {**self._extensions, "timeout": httpx2.Timeout(timeout).as_dict()}
        return [*headers, length], extensions


def _as_httpx_error(exc: Exception, request: httpx2.Request) -> httpx2.TransportError:
    """httpcore's ``exc`` as the ``httpx2.Client`` raises it: httpx2's class of the same name
    (the most specific one: a ``ReadTimeout`` stays a ``ReadTimeout``), its message, its request."""
    for kind in type(exc).__mro__:
        mapped = getattr(httpx2, kind.__name__, None)
        if isinstance(mapped, type) and issubclass(mapped, httpx2.TransportError):
            return mapped(str(exc), request=request)
    return httpx2.TransportError(str(exc), request=request)
