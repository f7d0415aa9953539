"""Hashing and ed25519 signatures.

Keys are raw 32-byte ed25519 public keys: the same bytes a libp2p peer id is
derived from, so a node signs protocol messages with its network identity.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

HASH_LEN = 32
PUBKEY_LEN = 32
SIG_LEN = 64
UNSIGNED = bytes(SIG_LEN)  # a Signed object's signature until consensus.rules.sign sets it
ZERO_HASH = bytes(HASH_LEN)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class SigningKey:
    """An ed25519 private key; `seed` is the 32-byte secret libp2p also uses."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError(f"ed25519 seed must be 32 bytes, got {len(seed)}")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> SigningKey:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))

    @property
    def seed(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:  # never print the secret
        return f"SigningKey(public={self.public.hex()})"


def verify_signature(public: bytes, message: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid ed25519 signature; never raises on bad bytes."""
    if len(public) != PUBKEY_LEN or len(signature) != SIG_LEN:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def short(data: bytes, width: int = 8) -> str:
    """A key or hash as logs and messages name it: its first `width` hex digits."""
    return data.hex()[:width]
