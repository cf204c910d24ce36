"""The fake API server's pods/portforward subresource: the websocket protocol the Kubernetes client
speaks (v4.channel.k8s.io: per port a data channel 2i and an error channel 2i+1, each opened with
a frame holding the port, little endian; then each binary message is its channel's byte and data).
A pod's port is whatever `FakeApi.forwards[(namespace, pod, port)]` names, (host, port) here."""

from __future__ import annotations

import select
import socket

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

PROTOCOL = "v4.channel.k8s.io"


def portforward(handler, target: tuple[str, int] | None, port: int, pod: str) -> None:
    """Serve one forwarding websocket on `handler`'s connection (the request's headers read)."""
    ws = WSConnection(ConnectionType.SERVER)
    head = handler.requestline + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items()) + "\r\n"
    ws.receive_data(head.encode())
    request = next(e for e in ws.events() if isinstance(e, Request))
    if PROTOCOL not in request.subprotocols:
        handler.send_error(400, f"expected the {PROTOCOL} subprotocol")
        return
    conn: socket.socket = handler.connection
    conn.sendall(ws.send(AcceptConnection(subprotocol=PROTOCOL)))
    opening = port.to_bytes(2, "little")
    conn.sendall(ws.send(BytesMessage(b"\0" + opening)) + ws.send(BytesMessage(b"\1" + opening)))
    handler.close_connection = True
    try:
        remote = socket.create_connection(target) if target else None
    except OSError as e:
        remote, target = None, None
        why = e.strerror
    else:
        why = "nothing listens there"
    if remote is None:
        text = f"error forwarding port {port} to pod {pod}: dial tcp4 127.0.0.1:{port}: connect: {why}"
        conn.sendall(ws.send(BytesMessage(b"\1" + text.encode())))
        _drain(conn, ws)
        return
    try:
        _pump(conn, remote, ws)
    finally:
        remote.close()


def _pump(conn: socket.socket, remote: socket.socket, ws: WSConnection) -> None:
    fresh = True  # the next data starts a message: its first byte is the channel
    while True:
        ready, _, _ = select.select([conn, remote], [], [])
        if remote in ready:
            data = remote.recv(1 << 16)
            if not data:
                conn.sendall(ws.send(CloseConnection(code=1000)))
                return
            conn.sendall(ws.send(BytesMessage(b"\0" + data)))
        if conn in ready:
            data = conn.recv(1 << 16)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    conn.sendall(ws.send(event.response()))
                    return
                if isinstance(event, BytesMessage):
                    payload = bytes(event.data)[1:] if fresh else bytes(event.data)
                    fresh = event.message_finished
                    remote.sendall(payload)


def _drain(conn: socket.socket, ws: WSConnection) -> None:
    """Until the client closes."""
    while data := conn.recv(1 << 16):
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, CloseConnection):
                conn.sendall(ws.send(event.response()))
                return
