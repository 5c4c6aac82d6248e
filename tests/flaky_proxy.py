"""A TCP proxy on 127.0.0.1 in front of the test S3 server that can stage an outage mid-read.

Reads from a store break in ways a mock cannot fake: a connection reset halfway through a GET, new
connections refused for a while, then service again. `FlakyProxy.outage_after(n, seconds)` does
that to real sockets: once `n` bytes have gone from the server to clients, every open connection is
reset (RST, SO_LINGER 0) and every new one is reset on accept until `seconds` have passed.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator


def _reset(sock: socket.socket) -> None:
    """Abort a connection now, even while another thread is blocked reading it (close alone would
    wait for that read to return)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FlakyProxy:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.bytes_down = 0
        self.resets = 0  # connections reset by the outage
        self._trigger: int | None = None
        self._seconds = 0.0
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outage_after(self, bytes_down: int, seconds: float) -> None:
        """Reset everything once `bytes_down` more bytes went to clients, for `seconds`."""
        with self._lock:
            self._trigger = self.bytes_down + bytes_down
            self._seconds = seconds

    def restore(self) -> None:
        """End an outage now (and cancel one not yet triggered)."""
        with self._lock:
            self._trigger = None
            self._down_until = 0.0

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._down():
                self.resets += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if downstream:
                    with self._lock:
                        self.bytes_down += len(data)
                        fire = self._trigger is not None and self.bytes_down >= self._trigger
                        if fire:
                            self._trigger = None
                            self._down_until = time.monotonic() + self._seconds
                    if fire:
                        self._cut_all()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _reset(src)
            _reset(dst)

    def _cut_all(self) -> None:
        with self._lock:
            victims, self._open = list(self._open), set()
        self.resets += len(victims) // 2
        for s in victims:
            _reset(s)

    def close(self) -> None:
        self._stop = True
        _reset(self.listener)
        self._cut_all()


@contextlib.contextmanager
def flaky_proxy(target_endpoint: str) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(int(target_endpoint.rsplit(":", 1)[1]))
    try:
        yield proxy
    finally:
        proxy.close()
