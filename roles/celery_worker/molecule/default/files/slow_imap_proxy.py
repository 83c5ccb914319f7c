#!/usr/bin/env python3
"""A slow TCP relay for the graceful-restart test: it holds each connection for a while
before relaying to the real IMAP server, then delays every reply chunk, so a sync through
it runs long enough to be interrupted by a deployment.

usage: slow_imap_proxy.py LISTEN_PORT UPSTREAM_PORT GREETING_DELAY CHUNK_DELAY
"""

import contextlib
import socket
import sys
import threading
import time


def pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    try:
        while data := src.recv(65536):
            time.sleep(delay)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def handle(client: socket.socket, upstream_port: int, greeting: float, chunk: float) -> None:
    time.sleep(greeting)
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    threading.Thread(target=pump, args=(client, upstream, 0.0), daemon=True).start()
    pump(upstream, client, chunk)


def main() -> None:
    listen, upstream = int(sys.argv[1]), int(sys.argv[2])
    greeting, chunk = float(sys.argv[3]), float(sys.argv[4])
    server = socket.create_server(("127.0.0.1", listen))
    while True:
        client, _ = server.accept()
        args = (client, upstream, greeting, chunk)
        threading.Thread(target=handle, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
