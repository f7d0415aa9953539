"""Shared helpers for the p2p tests: real hosts on 127.0.0.1, polling waits, validators.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a host can dial from
127.0.0.2, 127.0.0.3, ... (`dial_from`): one machine plays peers on several addresses,
which the per-address limits and bans need.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as x25519
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as Noise
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from libp2p.stream_muxer.yamux.yamux import Yamux

from consensus import rules
from consensus.errors import InvalidError
from consensus.strategy import rule_for
from consensus.types import Block, CommitTx, Genesis, ProofTx, Reveal
from p2p import (
    Delivered,
    GossipConfig,
    GossipItem,
    HostConfig,
    P2PHost,
    TopicKind,
    Validator,
    Verdict,
    key_pair_from_seed,
)
from storage import BlockMeta, ChainStore
from support.chainfactory import Chain

TIMEOUT = 30.0  # generous: a loaded 2-core machine


def seed(name: str) -> bytes:
    return hashlib.sha256(b"p2p-test-seed/" + name.encode()).digest()


def config(name: str, **kw: object) -> HostConfig:
    """A test host's config: no peer discovery unless asked (`target_peers=N`), so the
    topology a test builds (a line of hops, say) is the one it tests."""
    gossip = kw.pop("gossip", GossipConfig())
    kw.setdefault("target_peers", 0)
    return HostConfig(seed=seed(name), gossip=gossip, **kw)  # type: ignore[arg-type]


_inboxes: weakref.WeakKeyDictionary[P2PHost, trio.MemoryReceiveChannel[Delivered]] = (
    weakref.WeakKeyDictionary()
)


def inbox(host: P2PHost) -> trio.MemoryReceiveChannel[Delivered]:
    """The host's accepted messages, from the first call on (`running` makes the call
    before a host starts, so nothing delivered to it is missed)."""
    if host not in _inboxes:
        _inboxes[host] = host.gossip.listen()
    return _inboxes[host]


@asynccontextmanager
async def running(hosts: list[P2PHost]) -> AsyncIterator[list[P2PHost]]:
    async with AsyncExitStack() as stack:
        for h in hosts:
            inbox(h)
        for h in hosts:
            await stack.enter_async_context(h.run())
        yield hosts


async def wait_for(pred: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.05)


async def connect_line(hosts: list[P2PHost]) -> None:
    """h0 - h1 - ... - hn, and wait until every link carries both topics."""
    for a, b in itertools.pairwise(hosts):
        await b.connect(a.addrs[0])
    await wait_links(hosts)


async def wait_links(hosts: list[P2PHost]) -> None:
    for a, b in itertools.pairwise(hosts):
        for kind in TopicKind:
            await wait_for(lambda a=a, b=b, kind=kind: b.peer_id in a.gossip.topic_peers(kind))
            await wait_for(lambda a=a, b=b, kind=kind: a.peer_id in b.gossip.topic_peers(kind))
            await wait_for(lambda a=a, b=b, kind=kind: b.peer_id in a.gossip.mesh_peers(kind))
            await wait_for(lambda a=a, b=b, kind=kind: a.peer_id in b.gossip.mesh_peers(kind))


async def receive(
    host: P2PHost, pred: Callable[[Delivered], bool], timeout: float = TIMEOUT
) -> Delivered:
    """The first delivery matching `pred` (others are skipped)."""
    with trio.fail_after(timeout):
        while True:
            d = await inbox(host).receive()
            if pred(d):
                return d


async def absent(host: P2PHost, pred: Callable[[Delivered], bool], wait: float) -> bool:
    """True if nothing matching `pred` arrives within `wait` seconds."""
    with trio.move_on_after(wait):
        while True:
            d = await inbox(host).receive()
            if pred(d):
                return False
    return True


def consensus_validator(chain: Chain) -> Validator:
    """The stateless consensus checks a node runs on gossip (no zk here)."""
    genesis: Genesis = chain.genesis

    async def validate(item: GossipItem, raw: bytes, forwarder: ID) -> Verdict:
        try:
            if isinstance(item, CommitTx):
                rules.check_commit(genesis, chain.chain_id, item, genesis.participants)
            elif isinstance(item, Reveal):
                rules.check_reveal(genesis, chain.chain_id, item)
            elif isinstance(item, ProofTx):
                if item.participant not in genesis.participants:
                    return Verdict.REJECT
            elif isinstance(item, Block):
                rules.check_reveal(genesis, chain.chain_id, item.reveal)
        except InvalidError:
            return Verdict.REJECT
        return Verdict.ACCEPT

    return validate


def forged_commit(chain: Chain, rnd: int, tag: bytes) -> CommitTx:
    """A well-formed commit whose signature is wrong: decodes, fails consensus."""
    good = chain.commit(chain.participants[0], rnd, chain.chain_id, b"model" + tag)
    return dataclasses.replace(good, signature=bytes(64))


def build_store(path: Path, chain: Chain, blocks: int) -> tuple[ChainStore, list[Block]]:
    """A real LevelDB store with `blocks` valid blocks on the canonical chain."""
    store = ChainStore.open(path)
    store.init_genesis(chain.chain_id, chain.genesis.encode())
    parent, score, out = chain.chain_id, 0, []
    for i in range(blocks):
        block, models = chain.round_block(i, parent, i + 1, {0: 3, 1: 2, 2: 1})
        score += rule_for(chain.genesis).score(block)
        raw = block.encode()
        store.put_block(block.hash(), raw, BlockMeta(parent, i + 1, score), new_head=True)
        for m in models.values():
            store.put_blob(m)
        parent = block.hash()
        out.append(block)
    return store, out


def dial_from(libp2p_host: Any, ip: str) -> None:
    """Make a py-libp2p host's TCP dials leave from `ip` (a loopback address here)."""
    for transport in libp2p_host.get_network().transport_manager.get_transports():
        with_source = getattr(transport, "dial_with_source", None)
        if with_source is not None:

            async def dial(maddr: Any, with_source: Any = with_source) -> Any:
                return await with_source(maddr, (ip, 0))

            transport.dial = dial


@asynccontextmanager
async def bare_hosts(count: int, source_ip: str | None = None) -> AsyncIterator[list[Any]]:
    """Plain py-libp2p hosts with fresh identities and none of our hardening: attackers."""
    async with AsyncExitStack() as stack:
        hosts = []
        for _ in range(count):
            kp = key_pair_from_seed(os.urandom(32))
            host = new_host(
                key_pair=kp,
                sec_opt={NOISE: Noise(kp, noise_privkey=x25519().private_key)},
                muxer_opt={TProtocol(YAMUX): Yamux},
            )
            if source_ip is not None:
                dial_from(host, source_ip)
            await stack.enter_async_context(host.run([]))
            hosts.append(host)
        yield hosts


async def bare_connect(xs: list[Any], target: P2PHost) -> None:
    """Connect bare hosts to `target`, all at once (py-libp2p spends 250 ms on each)."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(target.addrs[0]))
    async with trio.open_nursery() as nursery:
        for x in xs:
            nursery.start_soon(x.connect, info)
