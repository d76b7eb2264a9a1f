"""Only the hosts from settings are answered, and a refusal is JSON like every other error.

Starlette's TrustedHostMiddleware does the matching; it answers a bad Host header with a
plain-text 400, so its answer is rewritten here into the gateway's `{"detail": ...}` shape.
"""

from __future__ import annotations

import json

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PASSED = "sagaworks.host_passed"
REFUSAL = json.dumps({"detail": "invalid Host header"}).encode()


class TrustedHosts:
    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.check = TrustedHostMiddleware(self._passed, allowed_hosts=allowed_hosts)

    async def _passed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[PASSED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.check(scope, receive, send)
            return

        async def json_refusal(message: Message) -> None:
            if scope.get(PASSED):
                await send(message)
            elif message["type"] == "http.response.start":
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(REFUSAL)).encode()),
                ]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await send({"type": "http.response.body", "body": REFUSAL})

        await self.check(scope, receive, json_refusal)
