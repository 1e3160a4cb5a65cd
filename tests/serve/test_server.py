"""glip.serve.server: a background uvicorn server on a pre-bound free port."""

from __future__ import annotations

import httpx
import pytest

from glip.serve.server import BackgroundServer, ServerStartError, bind_socket


async def hello(scope, receive, send):  # a minimal ASGI app
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_background_server_serves_and_stops():
    with BackgroundServer(hello) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url + "/").text == "hello"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/", timeout=2)


def test_a_port_in_use_is_a_clear_error():
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(ServerStartError, match="cannot listen on 127.0.0.1"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
