"""Runs in a venv with openpi-client (numpy < 2): relays observations to `dtp serve` through
`openpi_client.websocket_client_policy.WebsocketClientPolicy` and the replies back.

usage: python openpi_relay.py HOST PORT [API_KEY]
stdin/stdout carry frames: 4-byte big-endian length, then msgpack in openpi's own encoding
(openpi_client.msgpack_numpy). The first frame out is the server's metadata; then one reply
frame per request frame ({"error": text} when the client raised). Ends at end of stdin.
"""

import struct
import sys

from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy


def read_frame(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    return stream.read(n)


def write_frame(stream, payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    api_key = sys.argv[3] if len(sys.argv) > 3 else None
    policy = WebsocketClientPolicy(host, port, api_key=api_key)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    write_frame(stdout, msgpack_numpy.packb(policy.get_server_metadata()))
    while (frame := read_frame(stdin)) is not None:
        obs = msgpack_numpy.unpackb(frame)
        try:
            reply = policy.infer(obs)
        except RuntimeError as e:  # the client's way of reporting a text (error) reply
            reply = {"error": str(e)}
        write_frame(stdout, msgpack_numpy.packb(reply))


if __name__ == "__main__":
    main()
