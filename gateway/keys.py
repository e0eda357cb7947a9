"""API keys: one account each, with permissions, in a JSON key file with owner-only permissions.

Two kinds, as Binance offers:

- `ed25519` (the default): the client keeps the private key; the server stores only the public key
  (hex). Signatures are checked with the `cryptography` package (pyca/cryptography: OpenSSL's
  Ed25519, constant-time, maintained by the Python Cryptographic Authority).
- `hmac`: HMAC-SHA256 with a shared secret, for clients such as ccxt that sign with a secret. The
  server must store the secret, so the key file is created 0600 and the secret never appears in a
  repr or a log line.

A logon signs `protocol.logon_payload(key, ts_ns, nonce)`. `Authenticator` checks, in order: the
key exists and is not revoked, the timestamp lies within the receive window of the server's clock,
the signature, and that the nonce was not used by this key within the window (replay). Nonces are
remembered for twice the window; anything older is refused by the window check anyway.

Where the nonces live decides what "not used" covers. The Authenticator's own memory is one
process's: `perp serve` (the venue's only front) adds `not_before_ns`, its start, and refuses a
logon signed before it (4106: the nonces this process never saw may have been used by the one
before it), so a logon frame cannot be replayed after a restart. Scaled out, every `perp gateway`
also records each (key, nonce) in Redis (gateway.front `RedisGateway`, SET NX PX twice the window),
so one frame logs on at most once on the whole venue.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import msgspec

from gateway.errors import GatewayCode
from gateway.protocol import logon_payload

KeyKind = Literal["ed25519", "hmac"]
PERMISSIONS = ("read", "trade", "admin")


class ApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    key: str  # public identifier, sent at logon
    kind: KeyKind
    account: int
    permissions: tuple[str, ...]
    public_key: str = ""  # ed25519: 32 bytes, hex
    secret: str = ""  # hmac: the shared secret, hex (never logged)
    created_ns: int = 0
    revoked: bool = False
    label: str = ""

    def __repr__(self) -> str:  # the secret stays out of tracebacks and logs
        return (f"ApiKey(key={self.key!r}, kind={self.kind!r}, account={self.account}, "
                f"permissions={self.permissions!r}, revoked={self.revoked})")


class KeyFile(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[ApiKey] = []


class KeyError_(Exception):
    def __init__(self, code: GatewayCode, msg: str):
        super().__init__(msg)
        self.code = code
        self.msg = msg


class KeyStore:
    """The key file. Writes go through a temporary file created 0600 and renamed over the old one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.keys: dict[str, ApiKey] = {}
        self.reload()

    def reload(self) -> None:
        self.generation = getattr(self, "generation", 0) + 1  # bumped on every (re)load
        if self.path.exists():
            st = self.path.stat()
            if st.st_mode & 0o077:
                raise PermissionError(f"{self.path} is readable by others (mode {st.st_mode & 0o777:o}); "
                                      "key files must be owner-only: chmod 600")
            self._mtime_ns = st.st_mtime_ns
            data = msgspec.json.decode(self.path.read_bytes(), type=KeyFile)
            self.keys = {k.key: k for k in data.keys}
        else:
            self._mtime_ns = 0
            self.keys = {}

    def reload_if_changed(self) -> bool:
        """Pick up `perp keys create|revoke` run against the file of a running server."""
        mtime = self.path.stat().st_mtime_ns if self.path.exists() else 0
        if mtime == self._mtime_ns:
            return False
        self.reload()
        return True

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgspec.json.format(msgspec.json.encode(KeyFile(list(self.keys.values())))))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def create(self, account: int, permissions: tuple[str, ...], kind: KeyKind = "ed25519",
               label: str = "") -> tuple[ApiKey, str]:
        """A new key; returns it and the credential the client keeps (ed25519 private key or the
        hmac secret, hex). The ed25519 private key is not stored."""
        bad = [p for p in permissions if p not in PERMISSIONS]
        if bad or not permissions:
            raise ValueError(f"permissions must be a non-empty subset of {PERMISSIONS}, got {permissions}")
        key_id = "k" + secrets.token_hex(8)
        if kind == "ed25519":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import (
                Ed25519PrivateKey,
            )
            from cryptography.hazmat.primitives.serialization import (
                Encoding,
                NoEncryption,
                PrivateFormat,
                PublicFormat,
            )

            priv = Ed25519PrivateKey.generate()
            pub_hex = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
            credential = priv.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
            k = ApiKey(key=key_id, kind=kind, account=account, permissions=tuple(permissions), public_key=pub_hex,
                       created_ns=time.time_ns(), label=label)
        elif kind == "hmac":
            credential = secrets.token_hex(32)
            k = ApiKey(key=key_id, kind=kind, account=account, permissions=tuple(permissions), secret=credential,
                       created_ns=time.time_ns(), label=label)
        else:
            raise ValueError(f"unknown key kind {kind!r}")
        self.keys[key_id] = k
        self.save()
        return k, credential

    def revoke(self, key_id: str) -> ApiKey:
        k = self.keys[key_id]
        self.keys[key_id] = msgspec.structs.replace(k, revoked=True)
        self.save()
        return self.keys[key_id]


def sign_logon(kind: KeyKind, credential_hex: str, key: str, ts_ns: int, nonce: str) -> str:
    """The client's signature (hex) for a logon: used by gateway.client and the tests."""
    payload = logon_payload(key, ts_ns, nonce)
    if kind == "hmac":
        return hmac.new(bytes.fromhex(credential_hex), payload, hashlib.sha256).hexdigest()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(credential_hex)).sign(payload).hex()


class Authenticator:
    """Logon checks against the key file: `verify` (key, revocation, window, signature, the start
    rule and this process's nonce memory), then, once the logon is taken, `remember` (the nonce is
    recorded). A caller with a shared nonce store (RedisGateway) claims the nonce there in between."""

    def __init__(self, store: KeyStore, recv_window_ns: int = 5_000_000_000, max_nonces: int = 1_000_000,
                 not_before_ns: int = 0):
        self.store = store
        self.recv_window_ns = recv_window_ns
        self.max_nonces = max_nonces
        self.not_before_ns = not_before_ns  # a logon signed earlier is refused (4106); 0: none
        self._nonces: OrderedDict[tuple[str, str], int] = OrderedDict()  # (key, nonce) -> ts_ns, oldest first
        self._verifiers: dict[str, object] = {}

    def verify(self, key: str, ts_ns: int, nonce: str, signature_hex: str, now_ns: int) -> ApiKey:
        """Every check but recording the nonce; raises KeyError_ with the first one that fails."""
        self.store.reload_if_changed()
        k = self.store.keys.get(key)
        if k is None:
            raise KeyError_(GatewayCode.UNKNOWN_KEY, "unknown key")
        if k.revoked:
            raise KeyError_(GatewayCode.KEY_REVOKED, "key revoked")
        if abs(now_ns - ts_ns) > self.recv_window_ns:
            raise KeyError_(GatewayCode.TIMESTAMP_OUTSIDE_WINDOW,
                            f"timestamp {ts_ns} is outside the receive window of {self.recv_window_ns // 1_000_000} ms "
                            f"around the server's clock {now_ns}")
        if not self._verify(k, logon_payload(key, ts_ns, nonce), signature_hex):
            raise KeyError_(GatewayCode.BAD_SIGNATURE, "bad signature")
        if ts_ns < self.not_before_ns:
            raise KeyError_(GatewayCode.NONCE_REUSED,
                            f"timestamp {ts_ns} is before this server started ({self.not_before_ns}): its nonce may "
                            "have been used before the restart; sign a fresh logon")
        self._forget_before(now_ns - 2 * self.recv_window_ns)
        if (key, nonce) in self._nonces:
            raise KeyError_(GatewayCode.NONCE_REUSED, "nonce already used")
        return k

    def remember(self, key: str, nonce: str, now_ns: int) -> None:
        """Record (key, nonce) as used, for twice the receive window (at most `max_nonces` kept)."""
        self._nonces[(key, nonce)] = now_ns
        while len(self._nonces) > self.max_nonces:
            self._nonces.popitem(last=False)

    def _forget_before(self, cutoff_ns: int) -> None:
        while self._nonces:
            first = next(iter(self._nonces))
            if self._nonces[first] >= cutoff_ns:
                break
            del self._nonces[first]

    def _verify(self, k: ApiKey, payload: bytes, signature_hex: str) -> bool:
        try:
            sig = bytes.fromhex(signature_hex)
        except ValueError:
            return False
        if k.kind == "hmac":
            expected = hmac.new(bytes.fromhex(k.secret), payload, hashlib.sha256).digest()
            return hmac.compare_digest(expected, sig)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        verifier = self._verifiers.get(k.key)
        if verifier is None:
            verifier = Ed25519PublicKey.from_public_bytes(bytes.fromhex(k.public_key))
            self._verifiers[k.key] = verifier
        try:
            verifier.verify(sig, payload)  # type: ignore[attr-defined]
        except InvalidSignature:
            return False
        return True
