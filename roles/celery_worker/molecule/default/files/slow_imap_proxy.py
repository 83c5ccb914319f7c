#!/usr/bin/env python3
"""A slow TCP relay for the graceful-restart test, in front of the real IMAP server: after
the first FREE reply chunks of a connection (greeting and capabilities, which the app must
get within its 15 s connect timeout) it delays every reply chunk by DELAY seconds until
BUDGET seconds of delay are spent. A sync through it runs long enough to be interrupted by
a deployment, while no single wait comes near the app's 30 s read timeout.

usage: slow_imap_proxy.py LISTEN_PORT UPSTREAM_PORT FREE DELAY BUDGET
"""

import contextlib
import socket
import sys
import threading
import time


def pump(src: socket.socket, dst: socket.socket, free: int, delay: float, budget: float) -> None:
    try:
        while data := src.recv(65536):
            if free > 0:
                free -= 1
            elif budget > 0:
                time.sleep(delay)
                budget -= delay
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def handle(client: socket.socket, upstream: int, free: int, delay: float, budget: float) -> None:
    server = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pump, args=(client, server, 0, 0.0, 0.0), daemon=True).start()
    pump(server, client, free, delay, budget)


def main() -> None:
    listen, upstream, free = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    delay, budget = float(sys.argv[4]), float(sys.argv[5])
    server = socket.create_server(("127.0.0.1", listen))
    while True:
        client, _ = server.accept()
        args = (client, upstream, free, delay, budget)
        threading.Thread(target=handle, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
