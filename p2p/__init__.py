"""libp2p networking: a hardened host, gossip of round messages and blocks, chunked sync.

Nothing here decides validity: the node injects validators (p2p.gossip.Validator)
and a chain source (p2p.syncserver.ChainSource). Every py-libp2p trap this package works
around is listed in p2p.hardening.
"""

from __future__ import annotations

from p2p.gossip import (
    MAX_GOSSIP_PAYLOAD,
    BlockAnnounce,
    Delivered,
    Gossip,
    GossipConfig,
    GossipItem,
    TopicKind,
    Validator,
    Verdict,
    decode_gossip,
    topic_name,
)
from p2p.host import HostConfig, P2PHost
from p2p.identity import key_pair_from_seed, peer_id_from_seed, public_key_of
from p2p.sync import SyncLimits, sync_protocol
from p2p.syncclient import PeerLiedError, SyncClient, SyncError, WrongChainError
from p2p.syncserver import ChainSource, SyncServer

__all__ = [
    "MAX_GOSSIP_PAYLOAD",
    "BlockAnnounce",
    "ChainSource",
    "Delivered",
    "Gossip",
    "GossipConfig",
    "GossipItem",
    "HostConfig",
    "P2PHost",
    "PeerLiedError",
    "SyncClient",
    "SyncError",
    "SyncLimits",
    "SyncServer",
    "TopicKind",
    "Validator",
    "Verdict",
    "WrongChainError",
    "decode_gossip",
    "key_pair_from_seed",
    "peer_id_from_seed",
    "public_key_of",
    "sync_protocol",
    "topic_name",
]
