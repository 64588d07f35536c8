"""Store keys: derivation, sealing of small objects, key files, paper form.

A store encrypted at rest (format version 2, docs/store-format.md) has one
256-bit *store key*, generated when the store is created. It never goes to
the target; only its fingerprint does (``ovault-store.json``), so a wrong
key is named as such rather than reported as damage.

Everything is derived from the store key with HKDF-SHA256 (no salt, one
``info`` label per purpose), so the subkeys are independent:

=====================================  =====================================
info label                             use
=====================================  =====================================
``ovault-store-v2 digest``             BLAKE3 key of chunk digests (names)
``ovault-store-v2 chunk``              AES-256-GCM key of chunk files
``ovault-store-v2 meta``               AES-256-GCM key of indexes, manifests
``ovault-store-v2 fingerprint``        first 16 bytes: the key fingerprint
=====================================  =====================================

Nonces are random 96-bit values, one per object written (`seal`). The
associated data binds each object to the store (its ``store_id``), its kind
and its name, so no object can be swapped for another.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import StoreKeyInvalid

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
FINGERPRINT_SIZE = 16
PAPER_HEADER = "ovault store key"
PAPER_GROUP = 4  # characters per group on paper
PAPER_LINE = 16  # base32 characters per line (the last line is shorter)


def _hkdf(key: bytes, label: str, n: int = KEY_SIZE) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=label.encode()).derive(key)


@dataclass(frozen=True)
class StoreKey:
    """One store key and its derived subkeys. ``repr`` shows only the fingerprint."""

    secret: bytes = field(repr=False)

    def __post_init__(self):
        if not isinstance(self.secret, bytes) or len(self.secret) != KEY_SIZE:
            raise StoreKeyInvalid(f"a store key is {KEY_SIZE} bytes")
        object.__setattr__(self, "digest_key", _hkdf(self.secret, "ovault-store-v2 digest"))
        object.__setattr__(self, "chunk_aead", AESGCM(_hkdf(self.secret, "ovault-store-v2 chunk")))
        object.__setattr__(self, "meta_aead", AESGCM(_hkdf(self.secret, "ovault-store-v2 meta")))
        object.__setattr__(self, "fingerprint",
                           _hkdf(self.secret, "ovault-store-v2 fingerprint", FINGERPRINT_SIZE).hex())

    def __repr__(self) -> str:
        return f"StoreKey(fingerprint={self.fingerprint})"

    @classmethod
    def generate(cls) -> "StoreKey":
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def from_hex(cls, text: str) -> "StoreKey":
        t = text.strip().lower()
        if len(t) != 2 * KEY_SIZE or any(c not in "0123456789abcdef" for c in t):
            raise StoreKeyInvalid(f"a store key in hex is {2 * KEY_SIZE} hex digits")
        return cls(bytes.fromhex(t))

    def hex(self) -> str:
        return self.secret.hex()


# -- sealing --------------------------------------------------------------------


def seal_parts(aead: AESGCM, plaintext, ad: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext || tag) with a fresh random nonce."""
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce, aead.encrypt(nonce, plaintext, ad)


def seal(aead: AESGCM, plaintext, ad: bytes) -> bytes:
    """``nonce || ciphertext || tag`` with a fresh random nonce."""
    return b"".join(seal_parts(aead, plaintext, ad))


def unseal(aead: AESGCM, blob, ad: bytes) -> bytes:
    """Inverse of `seal` (``blob`` may be a memoryview); raises ValueError when
    authentication fails."""
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise ValueError("too short for a nonce and a tag")
    view = memoryview(blob)
    try:
        return aead.decrypt(bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:], ad)
    except InvalidTag:
        raise ValueError("authentication failed (damaged, replaced, or another store's key)") from None


# -- key files --------------------------------------------------------------------


def write_key_file(path: str | os.PathLike, key: StoreKey, *, overwrite: bool = False) -> None:
    """Write the key as hex to ``path``, mode 0600, atomically (temp + fsync + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if p.exists() and not overwrite:
        raise StoreKeyInvalid(f"key file {p} exists; refusing to overwrite it")
    tmp = p.parent / f".{p.name}.tmp.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (key.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, p)


def read_key_file(path: str | os.PathLike) -> StoreKey:
    """Read a key file; refuses one that others can read or write."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise FileNotFoundError(f"store key file {p} does not exist") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreKeyInvalid(f"key file {p} is not a regular file")
        if st.st_mode & 0o077:
            raise StoreKeyInvalid(f"key file {p} has mode {stat.S_IMODE(st.st_mode):o}; it must be 0600")
        if st.st_size > 4096:
            raise StoreKeyInvalid(f"key file {p} is too large to be a key")
        text = os.read(fd, 4096).decode("ascii", errors="replace")
    finally:
        os.close(fd)
    try:
        return StoreKey.from_hex(text)
    except StoreKeyInvalid:
        raise StoreKeyInvalid(f"key file {p} does not hold a key ({2 * KEY_SIZE} hex digits)") from None


# -- paper form -----------------------------------------------------------------


def _line_check(n: int, chars: str) -> str:
    return hashlib.sha256(f"{n}:{chars}".encode()).hexdigest()[:4]


def paper_export(key: StoreKey) -> str:
    """A printable form: base32 in numbered lines, each with its own checksum,
    and the fingerprint that `paper_import` checks the whole key against."""
    b32 = base64.b32encode(key.secret).decode().rstrip("=")
    lines = [PAPER_HEADER, f"fingerprint {key.fingerprint}"]
    for n, start in enumerate(range(0, len(b32), PAPER_LINE), 1):
        chars = b32[start : start + PAPER_LINE]
        groups = " ".join(chars[i : i + PAPER_GROUP] for i in range(0, len(chars), PAPER_GROUP))
        lines.append(f"{n}: {groups}  {_line_check(n, chars)}")
    return "\n".join(lines) + "\n"


def paper_import(text: str, expect_fingerprint: str | None = None) -> StoreKey:
    """Parse `paper_export`'s form (case and spacing are forgiven; each line's
    checksum names a mistyped line), or plain hex. The key must match the
    printed fingerprint and, when given, ``expect_fingerprint``."""
    stripped = text.strip()
    if len(stripped) == 2 * KEY_SIZE and all(c in "0123456789abcdefABCDEF" for c in stripped):
        key = StoreKey.from_hex(stripped)
        printed = None
    else:
        chars, printed, n_expected = [], None, 1
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.lower() == PAPER_HEADER:
                continue
            if line.lower().startswith("fingerprint"):
                printed = line.split()[-1].lower()
                continue
            num, sep, rest = line.partition(":")
            if not sep or not num.strip().isdigit():
                raise StoreKeyInvalid(f"cannot read line {raw!r}: expected 'N: XXXX XXXX XXXX XXXX  cccc'")
            n = int(num)
            if n != n_expected:
                raise StoreKeyInvalid(f"line {n_expected} is missing (found line {n})")
            parts = rest.split()
            if len(parts) < 2:
                raise StoreKeyInvalid(f"line {n} has no checksum")
            body = "".join(parts[:-1]).upper().replace("0", "O").replace("1", "I").replace("8", "B")
            if _line_check(n, body) != parts[-1].lower():
                raise StoreKeyInvalid(f"line {n} does not match its checksum {parts[-1]}: a character is mistyped")
            chars.append(body)
            n_expected += 1
        b32 = "".join(chars)
        try:
            secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
        except ValueError:
            raise StoreKeyInvalid("the lines do not decode as base32") from None
        if len(secret) != KEY_SIZE:
            raise StoreKeyInvalid(f"the lines hold {len(secret)} bytes, a key is {KEY_SIZE} (a line is missing?)")
        key = StoreKey(secret)
    if printed is not None and printed != key.fingerprint:
        raise StoreKeyInvalid(f"the key's fingerprint is {key.fingerprint}, the paper says {printed}")
    if expect_fingerprint is not None and key.fingerprint != expect_fingerprint:
        raise StoreKeyInvalid(
            f"this key (fingerprint {key.fingerprint}) is not the store's key (fingerprint {expect_fingerprint})")
    return key
