"""What both ends of the HTTP API agree on: each route's argument schema, error bodies and write
framing.

A route's schema is a msgspec Struct: for a call of the interface (`Client`, `Pipelines`) it is
made from the method's signature, so the interface stays the one description of the API; the
routes that stream their data carry their arguments in the query string, in the Structs below.
The client encodes an instance, the daemon decodes the request into one, and decoding is the
validation: unknown or missing fields, wrong types and numbers out of range are refused there.

write_files bodies are a sequence of frames, so one request carries any number of files of any
size: u32 header length | msgpack OpHeader | if header.data: (u32 piece length | piece)* u32 0
"""

from __future__ import annotations

import functools
import inspect
import struct
import typing
from typing import Annotated

import msgspec

from pfsfuse.api.client import Client
from pfsfuse.api.types import Count, WriteOp
from pfsfuse.metadata.errors import KINDS, PfsError

MSGPACK = "application/msgpack"  # an RPC's answer, for a client that asks for it (Accept)
STREAMING = {"write_files", "get_file", "subscribe_commit", "read_chunk", "extract", "restore"}
RPC = frozenset(Client.__abstractmethods__) - STREAMING
_U32 = struct.Struct(">I")


class ErrorBody(msgspec.Struct):
    kind: str
    message: str


class OpHeader(msgspec.Struct, omit_defaults=True):
    op: WriteOp  # a Put's stream travels in the data frames that follow when `data` is set
    data: bool = False


@functools.cache
def hints(method: str, api: type = Client) -> dict[str, typing.Any]:
    """Argument and result types of an API method, from the interface's annotations."""
    return typing.get_type_hints(getattr(api, method), include_extras=True)


@functools.cache
def schema(method: str, api: type = Client) -> type[msgspec.Struct]:
    """The arguments of an interface's method as a Struct: its parameters, types and defaults."""
    types = hints(method, api)
    fields: list[tuple[typing.Any, ...]] = []
    for name, p in inspect.signature(getattr(api, method)).parameters.items():
        if name == "self":
            continue
        if p.default is inspect.Parameter.empty:
            fields.append((name, types[name]))
        else:
            fields.append((name, types[name], p.default))
    return msgspec.defstruct(f"{method}_args", fields, kw_only=True, omit_defaults=True, forbid_unknown_fields=True)


def encode_args(method: str, args: dict[str, typing.Any], api: type = Client) -> bytes:
    return msgspec.json.encode(schema(method, api)(**{k: v for k, v in args.items() if v is not None}))


def as_kwargs(args: msgspec.Struct) -> dict[str, typing.Any]:
    return {name: getattr(args, name) for name in args.__struct_fields__}


# -- the query strings of the routes that stream their data -------------------------------------

Hex = Annotated[str, msgspec.Meta(pattern="^(?:[0-9a-fA-F]{2}){1,64}$")]


class Query(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    pass


class WriteQuery(Query):
    repo: str
    ref: str
    listings: bool = False


class GetQuery(Query):
    repo: str
    ref: str
    path: str = ""
    offset: Count = 0
    length: Count | None = None


class ChunkQuery(Query):
    hash: Hex
    size: Count


class SubscribeQuery(Query):
    repo: str
    branch: str
    since: str | None = None
    new_only: bool = False


class ExtractQuery(Query):
    objects: bool = True


def query(args: Query) -> dict[str, str]:
    """A query Struct as the parameters of a URL."""
    out = {}
    for name, value in msgspec.to_builtins(args).items():
        out[name] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return out


def error_body(e: PfsError) -> bytes:
    return msgspec.json.encode(ErrorBody(e.kind, e.message))


def raise_error(status: int, body: bytes) -> typing.NoReturn:
    try:
        err = msgspec.json.decode(body, type=ErrorBody)
    except msgspec.DecodeError:
        raise PfsError(f"daemon answered HTTP {status}: {body[:200].decode(errors='replace')}") from None
    raise KINDS.get(err.kind, PfsError)(err.message)


def frame(payload: bytes) -> bytes:
    return _U32.pack(len(payload)) + payload


END = _U32.pack(0)


def read_u32(read_exactly) -> int:
    return _U32.unpack(read_exactly(4))[0]
