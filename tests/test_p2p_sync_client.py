"""The sync client on a short leash: silent peers cost seconds, content is raced and resumed.

Real hosts over loopback; the peers that misbehave are real hosts whose sync handler
is replaced (silent, lying, breaking off), the honest ones run a real SyncServer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2p import P2PHost, SyncClient, SyncError, SyncLimits, SyncServer
from p2p.framing import FrameError, FrameReader, write_frame
from p2p.sync import Chunk, ContentRequest, decode_request, sync_protocol
from storage import ChainStore
from support.chainfactory import make_chain
from support.p2p_util import config, running

CHAIN = make_chain()
BLOB = os.urandom(5 * 1024 * 1024 + 123)  # six 1 MiB chunks
BLOB_HASH = hashlib.sha256(BLOB).digest()
QUICK = SyncLimits(response_stall_s=1.0, open_timeout_s=2.0)


def store_with_blob(path: Path) -> ChainStore:
    store = ChainStore.open(path)
    store.init_genesis(CHAIN.chain_id, CHAIN.genesis.encode())
    store.put_blob(BLOB)
    return store


def handler(answer: Callable[[ContentRequest, int], bytes | None]) -> Any:
    """A sync handler that answers chunk requests with `answer(request, n)` (None: hang up)."""

    async def handle(stream: Any) -> None:
        reader = FrameReader(stream)
        for n in range(10**6):
            try:
                request = decode_request(await reader.read_frame(512, 30))
            except FrameError:
                return
            assert isinstance(request, ContentRequest)
            data = answer(request, n)
            if data is None:
                await stream.close()
                return
            chunk = Chunk(request.content_hash, request.offset, len(BLOB), data)
            await write_frame(stream, chunk.encode(), 30)

    return handle


async def never_answer(stream: Any) -> None:
    await trio.sleep_forever()


def garbage_then_hang_up(request: ContentRequest, n: int) -> bytes | None:
    """Two chunks of the right size and the wrong bytes, then the stream ends: no proof of a lie."""
    return os.urandom(min(request.length, len(BLOB) - request.offset)) if n < 2 else None


def lie(request: ContentRequest, n: int) -> bytes | None:
    return os.urandom(min(request.length, len(BLOB) - request.offset))


async def test_a_silent_peer_costs_one_stall_period_not_a_minute() -> None:
    me, mute = (
        P2PHost(config("leash-me"), CHAIN.chain_id),
        P2PHost(config("leash-mute"), CHAIN.chain_id),
    )
    mute.set_stream_handler(sync_protocol(CHAIN.chain_id), never_answer)
    async with running([me, mute]):
        await me.connect(mute.addrs[0])
        start = trio.current_time()
        with pytest.raises(SyncError, match="stalled"):
            await SyncClient(me, QUICK).status(mute.peer_id)
        assert trio.current_time() - start < QUICK.open_timeout_s + QUICK.response_stall_s


async def test_content_is_raced_so_silent_peers_first_in_line_cost_nothing(
    tmp_path: Path,
) -> None:
    me = P2PHost(config("race-me"), CHAIN.chain_id)
    mutes = [P2PHost(config(f"race-mute{i}"), CHAIN.chain_id) for i in range(2)]
    good = P2PHost(config("race-good"), CHAIN.chain_id)
    for m in mutes:
        m.set_stream_handler(sync_protocol(CHAIN.chain_id), never_answer)
    store = store_with_blob(tmp_path / "good")
    SyncServer(good, store)
    try:
        async with running([me, *mutes, good]):
            for h in [*mutes, good]:
                await me.connect(h.addrs[0])
            client = SyncClient(me)  # default limits: a silent peer would cost 5 s in turn
            start = trio.current_time()
            got = await client.content_from_any(
                [*(m.peer_id for m in mutes), good.peer_id], BLOB_HASH
            )
            assert got == BLOB
            # in turn, each silent peer would have cost a whole stall period first
            assert trio.current_time() - start < client.limits.response_stall_s
            assert me.merit.is_useful(good.peer_id)
            assert not any(me.merit.is_useful(m.peer_id) for m in mutes)  # cancelled, not served
    finally:
        store.close()


async def test_a_liar_is_penalised_and_the_next_peer_serves(tmp_path: Path) -> None:
    me, liar = (
        P2PHost(config("lie-me"), CHAIN.chain_id),
        P2PHost(config("lie-liar"), CHAIN.chain_id),
    )
    good = P2PHost(config("lie-good"), CHAIN.chain_id)
    liar.set_stream_handler(sync_protocol(CHAIN.chain_id), handler(lie))
    store = store_with_blob(tmp_path / "good")
    SyncServer(good, store)
    try:
        async with running([me, liar, good]):
            for h in (liar, good):
                await me.connect(h.addrs[0])
            one_at_a_time = SyncClient(me, SyncLimits(race_width=1))
            assert (
                await one_at_a_time.content_from_any([liar.peer_id, good.peer_id], BLOB_HASH)
                == BLOB
            )
            assert me.penalty_score(liar.peer_id) >= 40
            assert me.penalty_score(good.peer_id) == 0
    finally:
        store.close()


async def test_downloads_cut_by_the_servers_resume_across_peers(tmp_path: Path) -> None:
    """Each server answers two chunks per stream; six chunks still arrive, in one call."""
    me = P2PHost(config("resume-me"), CHAIN.chain_id)
    peers = [P2PHost(config(f"resume-{i}"), CHAIN.chain_id) for i in range(2)]
    stores = [store_with_blob(tmp_path / f"s{i}") for i in range(2)]
    for p, s in zip(peers, stores, strict=True):
        SyncServer(p, s, SyncLimits(max_requests_per_stream=2))
    try:
        async with running([me, *peers]):
            for p in peers:
                await me.connect(p.addrs[0])
            got = await SyncClient(me).content_from_any([p.peer_id for p in peers], BLOB_HASH)
            assert got == BLOB
    finally:
        for s in stores:
            s.close()


async def test_bad_bytes_handed_on_do_not_get_the_honest_peer_blamed(tmp_path: Path) -> None:
    me, bad = (
        P2PHost(config("poison-me"), CHAIN.chain_id),
        P2PHost(config("poison-bad"), CHAIN.chain_id),
    )
    good = P2PHost(config("poison-good"), CHAIN.chain_id)
    bad.set_stream_handler(sync_protocol(CHAIN.chain_id), handler(garbage_then_hang_up))
    store = store_with_blob(tmp_path / "good")
    SyncServer(good, store)
    try:
        async with running([me, bad, good]):
            for h in (bad, good):
                await me.connect(h.addrs[0])
            one_at_a_time = SyncClient(me, SyncLimits(race_width=1))
            # `good` resumes from bad's 2 MiB, finds the whole does not match, starts over
            assert (
                await one_at_a_time.content_from_any([bad.peer_id, good.peer_id], BLOB_HASH) == BLOB
            )
            assert me.penalty_score(good.peer_id) == 0
    finally:
        store.close()
