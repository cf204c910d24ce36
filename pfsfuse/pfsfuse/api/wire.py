"""What both ends of the HTTP API agree on: argument typing, error bodies and write framing.

write_files bodies are a sequence of frames, so one request carries any number of files of any
size: u32 header length | msgpack OpHeader | if header.data: (u32 piece length | piece)* u32 0
"""

from __future__ import annotations

import functools
import struct
import typing

import msgspec

from pfsfuse.api.client import Client
from pfsfuse.api.types import WriteOp
from pfsfuse.metadata.errors import KINDS, InvalidArgument, PfsError

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
    return typing.get_type_hints(getattr(api, method))


def decode_args(method: str, body: bytes, api: type = Client) -> dict[str, typing.Any]:
    raw = msgspec.json.decode(body) if body else {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{method}: arguments must be an object")
    types = hints(method, api)
    out = {}
    for name, value in raw.items():
        if name not in types or name == "return":
            raise InvalidArgument(f"{method}: unknown argument {name!r}")
        try:
            out[name] = msgspec.convert(value, types[name])
        except msgspec.ValidationError as e:
            raise InvalidArgument(f"{method}: argument {name!r}: {e}") from None
    return out


def error_body(e: PfsError) -> bytes:
    return msgspec.json.encode(ErrorBody(e.kind, e.message))


def raise_error(status: int, body: bytes) -> typing.NoReturn:
    try:
        err = msgspec.json.decode(body, type=ErrorBody)
    except msgspec.DecodeError:
        raise PfsError(f"daemon answered HTTP {status}: {body[:200].decode(errors='replace')}")
    raise KINDS.get(err.kind, PfsError)(err.message)


def frame(payload: bytes) -> bytes:
    return _U32.pack(len(payload)) + payload


END = _U32.pack(0)


def read_u32(read_exactly) -> int:
    return _U32.unpack(read_exactly(4))[0]
