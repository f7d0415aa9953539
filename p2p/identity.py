"""The node's libp2p identity: its ed25519 signing key is its peer id."""

from __future__ import annotations

from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID


def key_pair_from_seed(seed: bytes) -> KeyPair:
    """libp2p identity from the node's 32-byte ed25519 seed (peer id = its public key)."""
    if len(seed) != 32:
        raise ValueError(f"ed25519 seed must be 32 bytes, got {len(seed)}")
    private = Ed25519PrivateKey.new(seed)
    return KeyPair(private, private.get_public_key())


def peer_id_from_seed(seed: bytes) -> ID:
    return ID.from_pubkey(key_pair_from_seed(seed).public_key)


def peer_id_of_key(public: bytes) -> ID:
    """The peer id of a raw 32-byte ed25519 key (a block's proposer, a tx's signer)."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(public))


def public_key_of(peer: ID) -> bytes | None:
    """The raw ed25519 key inside a peer id (None for non-ed25519 or unparsable ids)."""
    try:
        key = peer.extract_public_key()
    except Exception:
        return None
    if key is None:
        return None
    raw: bytes = key.to_bytes()
    return raw if len(raw) == 32 else None
