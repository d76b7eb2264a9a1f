"""The codec endpoint: Temporal's remote codec protocol, for operators only.

ARCHITECTURE.md, Security.

The Web UI (`--ui-codec-endpoint`, or Temporal Cloud's codec setting) and the CLI
(`--codec-endpoint`, `--codec-auth`) send `{"payloads": [...]}` (the protobuf JSON form of
`Payloads`: `metadata` values and `data` in base64) to `/codec/decode` and `/codec/encode`,
with an `X-Namespace` header. The answer has the same shape. The codec is the API's own
Temporal client's, so it holds exactly the key ring the workers encrypt with.

The Web UI runs on another origin, so this prefix (and only this one) answers CORS, for
the UI's origins only and with credentials, which the browser needs to send the
operator's session cookie.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import PayloadCodec

from api.auth import CSRF_HEADER, OperatorDep
from api.deps import ClientDep, SettingsDep
from api.errors import OPERATOR_ANSWERS, ApiError, error_responses
from common.codec import CodecError
from common.settings import Settings

PREFIX = "/codec"
MAX_PAYLOADS = 1000
BASE64: dict[str, Any] = {"format": "byte"}

router = APIRouter(prefix=PREFIX, tags=["codec"])


class BadPayload(ApiError):
    status_code = 400


class CodecPayload(BaseModel):
    # Unknown fields are ignored, not refused: newer SDKs and UIs may add some.
    model_config = ConfigDict(extra="ignore")

    # OpenAPI's `format: byte` says base64, so generated clients (and the contract test)
    # send base64; the check itself stays in _from_json, answering 400 as documented.
    metadata: dict[str, Annotated[str, Field(json_schema_extra=BASE64)]] = Field(
        default_factory=dict, description="values in base64"
    )
    data: str = Field(default="", description="base64", json_schema_extra=BASE64)


class CodecPayloads(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payloads: list[CodecPayload] = Field(default_factory=list, max_length=MAX_PAYLOADS)


NamespaceHeader = Annotated[str | None, Header(alias="X-Namespace")]
ANSWERS = error_responses(
    {400: "a payload that is not base64, names another namespace, or does not decrypt"},
    auth=OPERATOR_ANSWERS,
    body=True,
)


@router.post("/encode", summary="Encrypt payloads (remote codec protocol)", responses=ANSWERS)
async def encode(
    body: CodecPayloads,
    _operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    namespace: NamespaceHeader = None,
) -> CodecPayloads:
    codec = _codec(client, settings, namespace)
    return _to_json(await codec.encode(_from_json(body)))


@router.post("/decode", summary="Decrypt payloads (remote codec protocol)", responses=ANSWERS)
async def decode(
    body: CodecPayloads,
    _operator: OperatorDep,
    client: ClientDep,
    settings: SettingsDep,
    namespace: NamespaceHeader = None,
) -> CodecPayloads:
    codec = _codec(client, settings, namespace)
    try:
        return _to_json(await codec.decode(_from_json(body)))
    except CodecError as err:
        raise BadPayload(str(err)) from None


def _codec(client: Client, settings: Settings, namespace: str | None) -> PayloadCodec:
    # One key ring serves this deployment's namespace; a request for another is a mistake.
    if namespace is not None and namespace != settings.temporal_namespace:
        raise BadPayload(f"this codec serves namespace {settings.temporal_namespace!r} only")
    codec = client.data_converter.payload_codec
    assert codec is not None, "connect() always installs the codec"
    return codec


def _from_json(body: CodecPayloads) -> list[Payload]:
    try:
        return [
            Payload(
                metadata={k: base64.b64decode(v, validate=True) for k, v in p.metadata.items()},
                data=base64.b64decode(p.data, validate=True),
            )
            for p in body.payloads
        ]
    except (binascii.Error, ValueError):
        raise BadPayload("payload metadata values and data must be base64") from None


def _to_json(payloads: list[Payload]) -> CodecPayloads:
    return CodecPayloads(
        payloads=[
            CodecPayload(
                metadata={k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                data=base64.b64encode(p.data).decode(),
            )
            for p in payloads
        ]
    )


class CodecCors:
    """CORS for the codec prefix only: the rest of the API stays closed to other origins."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace", CSRF_HEADER],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(f"{PREFIX}/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: FastAPI, settings: Settings) -> None:
    """The routes and their CORS; one call in api/main.py."""
    app.include_router(router)
    app.add_middleware(CodecCors, origins=settings.codec_cors_origins)
