"""The signed POST to a webhook receiver, over a pinned, SSRF-checked connection.

The receiver's name is resolved once, every address it resolves to must be public, and the
connection goes to the address checked (DNS rebinding), with SNI and the certificate check on
the receiver's name; redirects are never followed. The body is signed with the endpoint's
secret (HMAC-SHA256 of the exact bytes sent).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from typing import Any

from flask import current_app

from datapass import clock, vault
from datapass.errors import DomainError

WEBHOOK_SEAL = "webhook-secret"


def sign_webhook_body(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256``: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookError(DomainError):
    """A webhook configuration refused, or a receiver's address (French message for the form)."""


def _address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if allow_loopback and ip.is_loopback:
        return True
    return ip.is_global and not ip.is_multicast


def _resolve_checked(host: str, port: int) -> str:
    """The one address a request to ``host`` goes to: the name is resolved once, every
    address it resolves to must be public (otherwise a receiver could alternate a public and
    an internal one), and the connection is made to the address checked here, never to the
    name again (DNS rebinding). ``WEBHOOK_ALLOW_PRIVATE`` lets loopback through (tests,
    development), nothing else."""
    allow_loopback = bool(current_app.config.get("WEBHOOK_ALLOW_PRIVATE"))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookError(f"nom d'hôte introuvable : {host}") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise WebhookError(f"nom d'hôte introuvable : {host}")
    for address in addresses:
        if not _address_allowed(address, allow_loopback):
            raise WebhookError(f"adresse non publique refusée : {address}")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a checked address; the Host header still names the receiver."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a checked address; SNI and the certificate check use the receiver's name."""

    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _send_webhook(url: str, raw: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``raw`` to ``url`` at the address checked by :func:`_resolve_checked`; returns
    the status code. Redirects are never followed and no answer's body is read: a 3xx is a
    failure like any other, and nothing a receiver (or what it redirects to) says is kept."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise WebhookError("adresse de webhook invalide")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = _resolve_checked(parsed.hostname, port)
    kind = _PinnedHTTPSConnection if parsed.scheme == "https" else _PinnedHTTPConnection
    connection = kind(parsed.hostname, port, address, timeout)
    target = parsed.path or "/"
    if parsed.query:
        target += "?" + parsed.query
    try:
        connection.request("POST", target, body=raw, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def post(url: str, secret_sealed: str, delivery_id: str, event: str, body: str) -> dict[str, Any]:
    """One signed POST; returns what happened (never raises for network errors). Call it
    outside any transaction: it talks to the receiver."""
    secret = vault.unseal(secret_sealed, WEBHOOK_SEAL).decode()
    raw = body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Datapass-Webhooks/1",
        "X-Hub-Signature-256": sign_webhook_body(secret, raw),
        "X-Datapass-Event": event,
        "X-Datapass-Delivery": delivery_id,
        "X-Datapass-Timestamp": str(int(clock.now().timestamp())),
    }
    started = time.monotonic()
    result: dict[str, Any] = {"status_code": None, "error": None}
    try:
        status = _send_webhook(url, raw, headers, current_app.config["WEBHOOK_TIMEOUT"])
    except (OSError, http.client.HTTPException, WebhookError, ValueError) as exc:
        result["error"] = str(exc)[:500] or exc.__class__.__name__
    else:
        result["status_code"] = status
        if 300 <= status < 400:
            result["error"] = f"redirection refusée (HTTP {status})"
    result["duration_ms"] = int((time.monotonic() - started) * 1000)
    result["success"] = result["status_code"] is not None and 200 <= result["status_code"] < 300
    return result
