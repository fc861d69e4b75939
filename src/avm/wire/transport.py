"""The transport: wire sessions over asyncio TLS 1.3, mutually authenticated, pinned.

    "TLS 1.3 over TCP, mutually authenticated with the hosts' own keys and pinned to the
    expected keys (no CA). A connection carries the channels of all machine pairs
    between two hosts." (DESIGN section 9)

**Who is who.** A host's identity is an Ed25519 (or Ed448) key pair
(:class:`~avm.core.caps.IdentityKey`); its *address* is the labelled hash of its
identity resource (:func:`~avm.core.caps.address_of`). Its TLS certificate carries that
same key as the certificate's public key, and the canonical encoding of the resource in
a private, non-critical extension (:data:`RESOURCE_OID`).

**The pin check (how a peer is authenticated).** Python's ``ssl`` offers no custom
verification callback, and a server cannot ask for a client certificate without also
verifying it against some trust anchor. So the certificates are issued by a fixed
*null issuer* whose private key is derived from a public label in this file: it vouches
for nothing, and exists only so that OpenSSL's chain check passes (``CERT_REQUIRED``
both ways, hostname checks off). The real check comes right after the handshake, on the
peer's leaf certificate (:func:`check_peer_certificate`):

1. the resource in the certificate decodes, its key is a valid key, and its hash is an
   address (``verify_identity``);
2. the certificate's public key is exactly the resource's key (same algorithm, same
   bytes);
3. a dialing side requires that address to be the one it meant to reach; an accepting
   side learns the peer's address from it;
4. the session's hello must then name that same address (``Connection.peer_address``).

TLS 1.3's CertificateVerify proves that the peer holds the private key of its leaf
certificate, so after these checks the peer holds the identity key of the address. A
certificate for any other key, a resource that does not match the key, or a true
identity that is not the expected one: the connection is closed and no session is
established (counted as ``auth-failed``).

**Limits.** Handshake and hello within ``handshake_seconds``; a connection from which
nothing arrives for ``idle_seconds`` is closed (a live peer is pinged at a third of
that, so only a silent one is); unauthenticated connections are capped in total and
per IP address, authenticated ones per peer address; each link's reading is rate
limited (frames per second, a token bucket), and its reader yields to the loop after
every read, so a flooding peer slows itself, not the others. Writing waits for the
socket to drain (back-pressure), and the session's window refuses new batch numbers
until acks come back (``Link.wait_for_room``).

**Reconnecting.** :class:`Dialer` keeps a link to one peer up, reconnecting with
exponential back-off (with jitter) between ``reconnect_min_seconds`` and
``reconnect_max_seconds``.

:class:`Link` runs a session over any asyncio stream; :class:`Transport` only ever
over TLS. (Tests run links over plain streams through the fault proxy to reach the
session itself; hosts use :class:`Transport`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import os
import random
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ..core import codec
from ..core.caps import IdentityKey, _address_hash, address_text, verify_identity
from ..core.errors import CapabilityError
from .errors import IdentityMismatch, RemoteProtocolError, WireError
from .frames import FRAMES_IN_FLIGHT_MAX, Frame
from .session import (
    Connection,
    ConnectionClosed,
    Event,
    HelloReceived,
    PingReceived,
)

__all__ = [
    "RESOURCE_OID",
    "TransportConfig",
    "TransportError",
    "HostIdentity",
    "check_peer_certificate",
    "Link",
    "Transport",
    "Dialer",
]

#: The certificate extension that carries the host's identity resource (a UUID-based
#: OID, RFC 9562 / X.667: no registration needed).
RESOURCE_OID = ObjectIdentifier("2.25.233815361409233036377106441163905391713")
NULL_ISSUER_LABEL = b"avm-tls-null-issuer-v1\0"
_FOREVER = (datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC),
            datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC))


class TransportError(WireError):
    """A connection that could not be made or authenticated (refused, timed out, a
    certificate whose key is not the expected identity)."""

    code = "transport"


@dataclass(frozen=True)
class TransportConfig:
    """Limits and timings of a transport (seconds, counts, bytes)."""

    handshake_seconds: float = 5.0
    idle_seconds: float = 30.0
    ping_seconds: float | None = None  # None: a third of idle_seconds
    connections_per_peer_max: int = 4
    handshakes_pending_max: int = 256
    handshakes_per_ip_max: int = 32
    frames_per_second_max: float = 200_000.0
    read_bytes: int = 65536
    write_buffer_high_bytes: int = 1 << 20
    reconnect_min_seconds: float = 0.05
    reconnect_max_seconds: float = 5.0
    window: int = FRAMES_IN_FLIGHT_MAX

    @property
    def ping_every(self) -> float:
        return self.ping_seconds if self.ping_seconds is not None else self.idle_seconds / 3


# ---------------------------------------------------------------------------------------
# Identities and certificates
# ---------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


_NULL_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(NULL_ISSUER_LABEL).digest())
_NULL_NAME = _name("avm null issuer: public key, vouches for nothing")
_NULL_CERT = (
    x509.CertificateBuilder().subject_name(_NULL_NAME).issuer_name(_NULL_NAME)
    .public_key(_NULL_KEY.public_key()).serial_number(1)
    .not_valid_before(_FOREVER[0]).not_valid_after(_FOREVER[1])
    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                 key_encipherment=False, data_encipherment=False,
                                 key_agreement=False, key_cert_sign=True, crl_sign=False,
                                 encipher_only=False, decipher_only=False), critical=True)
    .sign(_NULL_KEY, None))
NULL_ISSUER_PEM = _NULL_CERT.public_bytes(serialization.Encoding.PEM).decode()


class HostIdentity:
    """A host's identity key, its resource, address, certificate and TLS contexts."""

    def __init__(self, key: IdentityKey, metadata: tuple[tuple[str, Any], ...] = ()) -> None:
        self.key = key
        self.resource = key.resource(metadata)
        self.resource_bytes = codec.encode(self.resource)
        self.address = _address_hash(self.resource_bytes)
        self._pems: tuple[bytes, bytes] | None = None

    @classmethod
    def generate(cls, alg: str = "ed25519", metadata: tuple = ()) -> HostIdentity:
        """A fresh identity from the operating system's random source."""
        return cls(IdentityKey.from_seed(os.urandom(32), alg), metadata)

    def __repr__(self) -> str:
        return f"<HostIdentity {address_text(self.address)[:12]}...>"

    def certificate_pem(self) -> tuple[bytes, bytes]:
        """(certificate, private key) in PEM, the key never leaving this object but into
        an SSL context."""
        if self._pems is None:
            raw = self.key.private_bytes_raw()
            priv: Any = (ed25519.Ed25519PrivateKey.from_private_bytes(raw)
                         if self.key.alg == "ed25519" else ed448.Ed448PrivateKey.from_private_bytes(raw))
            cert = (
                x509.CertificateBuilder().subject_name(_name(address_text(self.address)[:64]))
                .issuer_name(_NULL_NAME).public_key(priv.public_key())
                .serial_number(int.from_bytes(self.address[:16], "big") >> 1 or 1)
                .not_valid_before(_FOREVER[0]).not_valid_after(_FOREVER[1])
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.UnrecognizedExtension(RESOURCE_OID, self.resource_bytes),
                               critical=False)
                .sign(_NULL_KEY, None))
            key_pem = priv.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
            self._pems = (cert.public_bytes(serialization.Encoding.PEM), key_pem)
        return self._pems

    def ssl_context(self, server: bool) -> ssl.SSLContext:
        """TLS 1.3 only, a certificate required both ways, chains checked against the null
        issuer only (the pin check after the handshake is the authentication)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=NULL_ISSUER_PEM)
        cert, key = self.certificate_pem()
        # ssl loads a certificate chain from files only: a private directory, removed at once.
        with tempfile.TemporaryDirectory(prefix="avm-tls-") as d:
            cf, kf = Path(d) / "cert.pem", Path(d) / "key.pem"
            fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            cf.write_bytes(cert)
            ctx.load_cert_chain(cf, kf)
        return ctx


def check_peer_certificate(der: bytes | None, expected: bytes | None = None) -> tuple[bytes, bytes]:
    """The pin check: ``(address, resource bytes)`` of the peer whose leaf certificate is
    ``der``, or :class:`~avm.wire.errors.IdentityMismatch`. ``expected``: the address the
    dialing side meant to reach."""
    if not der:
        raise IdentityMismatch("the peer presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
        resource = cert.extensions.get_extension_for_oid(RESOURCE_OID).value
        resource_bytes = resource.value  # type: ignore[attr-defined]
        pub = cert.public_key()
    except Exception as e:  # noqa: BLE001 - any malformed certificate is the peer's fault
        raise IdentityMismatch(f"the peer's certificate carries no identity: {type(e).__name__}") from None
    if type(resource_bytes) is not bytes:
        raise IdentityMismatch("the identity extension is not bytes")
    address = _address_hash(resource_bytes)
    try:
        res = verify_identity(resource_bytes, address)
    except CapabilityError as e:
        raise IdentityMismatch(f"the peer's identity does not check: {e}") from None
    if isinstance(pub, ed25519.Ed25519PublicKey):
        alg = "ed25519"
    elif isinstance(pub, ed448.Ed448PublicKey):
        alg = "ed448"
    else:
        raise IdentityMismatch("the peer's certificate key is not an Ed25519 or Ed448 key")
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if res["alg"] != alg or res["key"] != raw:
        raise IdentityMismatch("the certificate's key is not the identity's key")
    if expected is not None and address != expected:
        raise IdentityMismatch(
            f"the peer is {address_text(address)[:12]}..., not {address_text(expected)[:12]}...")
    return address, resource_bytes


# ---------------------------------------------------------------------------------------
# A link: one session over one stream
# ---------------------------------------------------------------------------------------

Handler = Callable[["Link", list[Event]], Awaitable[None]]


async def _ignore(link: Link, events: list[Event]) -> None:
    return None


class Link:
    """One session over one stream: the asyncio driver of a :class:`Connection`.

    The application's ``handler(link, events)`` is awaited for every read's events, in
    order, one read at a time (so a slow handler slows the reading of that link only,
    and the peer's sending through TCP's own flow control). Pings are answered here; an
    event list always reaches the handler, pongs included. A protocol error closes the
    link with a close frame carrying the error's code (``link.error``).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: Connection, handler: Handler = _ignore,
                 config: TransportConfig = TransportConfig(),
                 counts: Counter | None = None) -> None:
        self.reader, self.writer, self.conn = reader, writer, conn
        self.handler = handler
        self.config = config
        self.counts = counts if counts is not None else Counter()
        self.peer: bytes | None = conn.peer_address
        self.error: WireError | None = None
        self.opened = asyncio.Event()
        self.closed = asyncio.Event()
        self._room = asyncio.Event()
        self._last_in = time.monotonic()
        self._tokens = config.frames_per_second_max
        self._tokens_at = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        self._nonce = 0
        #: called (with no arguments) once the link has closed
        self.closed_callbacks: list[Callable[[], None]] = []
        writer.transport.set_write_buffer_limits(high=config.write_buffer_high_bytes)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._read_loop()),
                       asyncio.ensure_future(self._ping_loop())]
        self.writer.write(self.conn.hello())

    # -- sending ----------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        if self.closed.is_set():
            raise TransportError("the link is closed")
        if not data:
            return
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError, ssl.SSLError) as e:
            self.error = self.error or TransportError(f"stream error: {type(e).__name__}")
            self._shut()
            raise TransportError(f"the stream broke: {type(e).__name__}") from None

    async def write_frames(self, frames: list[bytes]) -> None:
        """Write frames already made by the session (``conn.send``, ``conn.ack``) in one
        write and one wait for the socket to drain: the coalesced form of :meth:`send`,
        for a sender with many frames ready at once."""
        await self._write(b"".join(frames))

    async def send(self, frame: Frame) -> None:
        """Send ``frame`` (LocalProtocolError if the session does not allow it now)."""
        await self._write(self.conn.send(frame))

    async def ack(self, sender: Any, receiver: bytes, upto: int, skipped: tuple = ()) -> None:
        await self._write(self.conn.ack(sender, receiver, upto, skipped))

    async def reject(self, sender: Any, receiver: bytes, seq: int, definite: bool, reason: str) -> None:
        await self._write(self.conn.reject(sender, receiver, seq, definite, reason))

    async def wait_for_room(self, n: int = 1) -> None:
        """Wait until ``n`` new batches fit in the window (or the link closes)."""
        while not self.conn.can_send(n):
            if self.closed.is_set():
                raise TransportError("the link is closed")
            self._room.clear()
            await self._room.wait()

    async def close(self, code: str = "ok", reason: str = "") -> None:
        if not self.closed.is_set():
            with contextlib.suppress(WireError):
                await self._write(self.conn.close(code, reason))
            self._shut()

    def _shut(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._room.set()
        for fn in self.closed_callbacks:
            with contextlib.suppress(Exception):
                fn()
        with contextlib.suppress(Exception):
            self.writer.close()
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()

    async def wait_closed(self) -> None:
        await self.closed.wait()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t

    # -- reading ----------------------------------------------------------------------
    async def _throttle(self, frames: int) -> None:
        rate = self.config.frames_per_second_max
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate) - frames
        self._tokens_at = now
        if self._tokens < 0:
            self.counts["rate-limited"] += 1
            await asyncio.sleep(-self._tokens / rate)

    async def _read_loop(self) -> None:
        cfg = self.config
        try:
            while True:
                try:
                    data = await asyncio.wait_for(self.reader.read(cfg.read_bytes),
                                                  cfg.idle_seconds)
                except TimeoutError:
                    self.counts["idle-closed"] += 1
                    self.error = TransportError(f"nothing received for {cfg.idle_seconds} s")
                    await self.close("idle", "nothing received")
                    return
                except (ConnectionError, ssl.SSLError, OSError) as e:
                    self.counts["stream-error"] += 1
                    self.error = TransportError(f"stream error: {type(e).__name__}")
                    data = b""
                self._last_in = time.monotonic()
                try:
                    events = self.conn.receive_data(data)
                except RemoteProtocolError as e:
                    self.counts[f"protocol-error:{e.code}"] += 1
                    self.error = e
                    with contextlib.suppress(WireError):
                        await self._write(self.conn.fail(e))
                    self._shut()
                    return
                except WireError as e:  # the stream ended already
                    self.error = self.error or e
                    self._shut()
                    return
                for ev in events:
                    if isinstance(ev, HelloReceived):
                        self.peer = ev.hello.address
                        self.opened.set()
                    elif isinstance(ev, PingReceived):
                        with contextlib.suppress(WireError):
                            await self._write(self.conn.send(_pong(ev.nonce)))
                if events:
                    try:
                        await self.handler(self, events)
                    except WireError as e:  # the handler's send hit a closed link, say
                        self.error = self.error or e
                        self._shut()
                        return
                    if self.conn.can_send():
                        self._room.set()
                if any(isinstance(ev, ConnectionClosed) for ev in events) or not data:
                    self._shut()
                    return
                if self.conn.state == "close-received":
                    with contextlib.suppress(WireError):
                        await self._write(self.conn.close())
                await self._throttle(max(1, len(events)))
                await asyncio.sleep(0)  # one read, then the other links' turn
        except asyncio.CancelledError:
            raise
        finally:
            self._shut()

    async def _ping_loop(self) -> None:
        every = self.config.ping_every
        while not self.closed.is_set():
            await asyncio.sleep(every)
            if self.conn.state == "open" and time.monotonic() - self._last_in >= every \
                    and self.conn.statistics().pings_outstanding == 0:
                self._nonce += 1
                with contextlib.suppress(WireError, ConnectionError):
                    await self.send(_ping(self._nonce))


def _ping(n: int) -> Frame:
    from .frames import Ping
    return Ping(n)


def _pong(n: int) -> Frame:
    from .frames import Pong
    return Pong(n)


# ---------------------------------------------------------------------------------------
# The transport: listening, dialing, limits
# ---------------------------------------------------------------------------------------


class Transport:
    """A host's endpoint: accepts and dials authenticated links; see the module docstring.

    ``handler(link, events)`` receives every link's events. ``committed_seq(peer,
    channel)``: the highest number of a channel the host has committed (its store), so
    every new session refuses what was already applied.
    """

    def __init__(self, identity: HostIdentity, handler: Handler = _ignore,
                 config: TransportConfig = TransportConfig(),
                 committed_seq: Callable[[bytes, tuple], int] = lambda peer, chan: 0) -> None:
        self.identity = identity
        self.handler = handler
        self.config = config
        self.committed_seq = committed_seq
        self.counts: Counter = Counter()
        self.links: dict[bytes, set[Link]] = {}
        self._server_ctx = identity.ssl_context(server=True)
        self._client_ctx = identity.ssl_context(server=False)
        self._server: asyncio.AbstractServer | None = None
        self._pending = 0
        self._pending_ip: Counter = Counter()
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def address(self) -> bytes:
        return self.identity.address

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (loopback by default); returns the port."""
        self._server = await asyncio.start_server(self._accept, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for links in list(self.links.values()):
            for link in list(links):
                await link.close("ok", "host closing")
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _session(self, peer: bytes) -> Connection:
        return Connection(self.identity.address, self.identity.resource_bytes,
                          peer_address=peer, window=self.config.window,
                          committed_seq=lambda chan: self.committed_seq(peer, chan))

    def _admit(self, link: Link) -> bool:
        peer = link.peer
        assert peer is not None
        have = self.links.setdefault(peer, set())
        if len(have) >= self.config.connections_per_peer_max:
            self.counts["refused-peer-cap"] += 1
            return False
        have.add(link)

        def gone(_: Any, link: Link = link) -> None:
            s = self.links.get(peer)
            if s is not None:
                s.discard(link)
                if not s:
                    del self.links[peer]
        t = asyncio.ensure_future(link.wait_closed())
        t.add_done_callback(gone)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return True

    async def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    peer: bytes, deadline: float) -> Link:
        """Run the hello exchange on an authenticated stream, within the deadline."""
        link = Link(reader, writer, self._session(peer), self.handler, self.config, self.counts)
        if not self._admit(link):
            writer.write(link.conn.close("limit", "too many connections from this peer"))
            with contextlib.suppress(Exception):
                writer.close()
            raise TransportError("too many connections from this peer")
        link.start()
        try:
            await asyncio.wait_for(_first(link.opened.wait(), link.closed.wait()),
                                   max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            self.counts["handshake-timeout"] += 1
            link._shut()
            raise TransportError("no hello within the handshake time") from None
        if not link.opened.is_set():
            self.counts["hello-failed"] += 1
            raise TransportError(f"the session did not open: {link.error}")
        self.counts["sessions-established"] += 1
        return link

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg = self.config
        ip = (writer.get_extra_info("peername") or ("?",))[0]
        if self._pending >= cfg.handshakes_pending_max or self._pending_ip[ip] >= cfg.handshakes_per_ip_max:
            self.counts["refused-pending-cap"] += 1
            writer.transport.abort()
            return
        self._pending += 1
        self._pending_ip[ip] += 1
        deadline = time.monotonic() + cfg.handshake_seconds
        try:
            try:
                await writer.start_tls(self._server_ctx, ssl_handshake_timeout=cfg.handshake_seconds)
                peer, _ = check_peer_certificate(_peer_der(writer))
            except IdentityMismatch as e:
                self.counts["auth-failed"] += 1
                self._log_refusal(e)
                writer.transport.abort()
                return
            except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
                self.counts["handshake-failed"] += 1
                self._log_refusal(e)
                writer.transport.abort()
                return
            with contextlib.suppress(TransportError):
                await self._open(reader, writer, peer, deadline)
        finally:
            self._pending -= 1
            self._pending_ip[ip] -= 1
            if not self._pending_ip[ip]:
                del self._pending_ip[ip]

    def _log_refusal(self, e: BaseException) -> None:
        self.counts[f"refused:{type(e).__name__}"] += 1

    async def connect(self, address: bytes, host: str, port: int) -> Link:
        """One attempt to open an authenticated link to ``address`` at ``host:port``."""
        cfg = self.config
        deadline = time.monotonic() + cfg.handshake_seconds
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                host, port, ssl=self._client_ctx, server_hostname="avm",
                ssl_handshake_timeout=cfg.handshake_seconds), cfg.handshake_seconds)
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
            self.counts["connect-failed"] += 1
            raise TransportError(f"cannot connect to {host}:{port}: {type(e).__name__}: {e}") from None
        try:
            check_peer_certificate(_peer_der(writer), expected=address)
        except IdentityMismatch as e:
            self.counts["auth-failed"] += 1
            writer.transport.abort()
            raise TransportError(f"wrong peer at {host}:{port}: {e.detail}") from None
        return await self._open(reader, writer, address, deadline)

    def dialer(self, address: bytes, host: str, port: int) -> Dialer:
        return Dialer(self, address, host, port)


def _peer_der(writer: asyncio.StreamWriter) -> bytes | None:
    """The peer's leaf certificate, or None if there is none (or the handshake broke)."""
    obj = writer.get_extra_info("ssl_object")
    try:
        return obj.getpeercert(binary_form=True) if obj is not None else None
    except (ValueError, ssl.SSLError, OSError):  # "handshake not done yet": it was cut
        return None


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class Dialer:
    """Keeps one link to a peer up: reconnects with exponential back-off and jitter.

    ``await dialer.link()`` gives the open link, waiting (and retrying) as needed.
    ``delays`` records the waits between failed attempts (tests check the back-off).
    """

    def __init__(self, transport: Transport, address: bytes, host: str, port: int,
                 rng: random.Random | None = None) -> None:
        self.transport, self.address, self.host, self.port = transport, address, host, port
        self.rng = rng or random.Random()
        self.delays: list[float] = []
        self.attempts = 0
        self.current: Link | None = None
        self._closing = False

    async def link(self) -> Link:
        cfg = self.transport.config
        failures = 0
        while True:
            if self._closing:
                raise TransportError("the dialer is closed")
            if self.current is not None and not self.current.closed.is_set():
                return self.current
            self.attempts += 1
            try:
                self.current = await self.transport.connect(self.address, self.host, self.port)
                return self.current
            except TransportError:
                delay = min(cfg.reconnect_max_seconds, cfg.reconnect_min_seconds * (2 ** failures))
                delay *= 0.5 + 0.5 * self.rng.random()
                failures += 1
                self.delays.append(delay)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        self._closing = True
        if self.current is not None:
            await self.current.close()
