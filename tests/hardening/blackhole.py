"""A TCP proxy for database fault tests that can be switched between forwarding to the real
server and black-holing: accepting connections and bytes and never answering, as a hung host
or a silently dropped network path does."""

from __future__ import annotations

import contextlib
import socket
import threading


class SwitchProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.blackhole = False
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set_blackhole(self, on: bool) -> None:
        with self._lock:
            self.blackhole = on
            if not on:  # connections opened while black-holed were never answered: drop them
                for held in self._held:
                    with contextlib.suppress(OSError):
                        held.close()
                self._held.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self.blackhole:
                    self._held.append(client)  # accepted, never read, never answered
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.blackhole:
                    continue  # swallowed: the other side waits for an answer that never comes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        self.set_blackhole(False)
