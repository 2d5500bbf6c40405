"""The network peers of Datapass as production meets them, for the reliability suite: a real
SMTP server (aiosmtpd) that can be stopped, slowed down or made to refuse, and a webhook
receiver that fails, redirects or is slow. Both listen on 127.0.0.1 and record what they
received; tests wait on them with a condition and a deadline, never a sleep."""

from __future__ import annotations

import socket
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpPeer:
    """aiosmtpd on a fixed port (so that it can be stopped and started again where Datapass
    expects it). ``delay`` seconds per message (a slow server), ``refuse`` an SMTP reply
    such as ``"550 5.1.1 Destinataire inconnu"`` (permanent) or ``"451 4.3.0 Réessayez"``."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.delay = 0.0
        self.refuse: str | None = None
        self.on_message = None  # called (in the server's thread) as each message arrives
        self.messages: list = []
        self.condition = threading.Condition()
        self.controller: Controller | None = None

    # aiosmtpd handler hook
    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.on_message is not None:
            self.on_message()
        if self.delay:
            time.sleep(self.delay)  # the server itself is slow: it blocks its own loop
        if self.refuse:
            return self.refuse
        message = message_from_bytes(envelope.content)
        with self.condition:
            self.messages.append(message)
            self.condition.notify_all()
        return "250 OK"

    def start(self) -> SmtpPeer:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(self, count: int, timeout: float = 20.0) -> list:
        """The messages once at least ``count`` arrived (AssertionError at the deadline)."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.messages)} message(s) reçus sur {count} attendus"
                self.condition.wait(left)
            return list(self.messages)

    def message_ids(self) -> list[str]:
        with self.condition:
            return [m["Message-ID"] for m in self.messages]


class HttpPeer:
    """A webhook receiver. ``status`` is its answer; ``location`` makes it redirect there
    (with ``status`` 301/302/303/307/308); ``delay`` seconds before answering; ``body`` what
    it writes back (tests check it is never shown). Records every request it gets."""

    def __init__(self, body: bytes = b"reponse du recepteur"):
        self.status = 204
        self.location: str | None = None
        self.delay = 0.0
        self.body = body
        self.on_request = None  # called (in the server's thread) as each request arrives
        self.requests: list[dict] = []
        self.condition = threading.Condition()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                with peer.condition:
                    peer.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": data,
                        }
                    )
                    peer.condition.notify_all()
                if peer.on_request is not None:
                    peer.on_request()
                if peer.delay:
                    time.sleep(peer.delay)
                self.send_response(peer.status)
                if peer.location:
                    self.send_header("Location", peer.location)
                self.send_header("Content-Length", str(len(peer.body)))
                self.end_headers()
                self.wfile.write(peer.body)

            do_POST = _answer  # noqa: N815
            do_GET = _answer  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}/webhooks/datapass"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.condition:
            self.requests.clear()
        self.status, self.location, self.delay, self.on_request = 204, None, 0.0, None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
