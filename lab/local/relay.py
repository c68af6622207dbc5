"""ssh ProxyCommand into a lab node: copy stdin/stdout to HOST:PORT.

The lab's ssh-config runs it inside the node's network namespace
(`nsenter --net=/run/netns/NODE python3 relay.py 127.0.0.1 22`), the way
Vagrant forwards a port to a VM's sshd: the host reaches a node without any
address of the lab's network existing outside its namespaces, and a node
whose link is down can still be logged into. Standard library only; no
netcat needed.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int) -> int:
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    open_sides = 2
    while open_sides:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(stdin, 65536)
                if data:
                    sock.sendall(data)
                else:  # ssh closed its side: pass the EOF on, keep reading replies
                    selector.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)
                    open_sides -= 1
            else:
                data = sock.recv(65536)
                if not data:
                    return 0
                _write_all(stdout, data)
    return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: relay.py HOST PORT", file=sys.stderr)
        return 2
    try:
        return relay(argv[1], int(argv[2]))
    except OSError as exc:
        print(f"relay: {argv[1]}:{argv[2]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
