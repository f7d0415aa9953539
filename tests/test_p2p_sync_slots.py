"""Sync slots under attack: a running SyncServer on a real host, attackers over loopback.

The attack measured on a live testnet: many identities from one address each hold the
most sync streams a peer may, and keep every stream alive with a StatusRequest just
inside the per-frame idle limit. Block models come over sync, so a node whose slots
are all held accepts no block but its own. Attackers here are bare py-libp2p hosts
dialling from their own loopback address (support.p2p_util.dial_from); the limits are
small so that each test takes seconds.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from consensus.errors import DecodeError
from p2p import P2PHost, SyncClient, SyncError, SyncLimits, SyncServer
from p2p.framing import FrameError, FrameReader, write_frame
from p2p.slots import PeerMerit, Slot, SlotTable
from p2p.sync import (
    MAX_RESPONSE_FRAME,
    Error,
    Status,
    StatusRequest,
    decode_response,
    sync_protocol,
)
from storage import ChainStore
from support.chainfactory import make_chain
from support.p2p_util import bare_connect, bare_hosts, build_store, config, running, wait_for

CHAIN = make_chain()
PROTO = TProtocol(sync_protocol(CHAIN.chain_id))
PROMPT_S = 2.0  # an honest call under attack: well under one per-frame idle limit of a node

# 16 slots, 4 of them reserved for useful peers; 4 per identity, 8 per address; a stream
# waits at most 1 s for a request and 3 s in all.
SMALL = SyncLimits(
    request_timeout_s=1.0,
    stream_idle_s=3.0,
    stream_lifetime_s=20.0,
    max_streams=16,
    reserved_streams=4,
    max_streams_per_peer=4,
    max_streams_per_addr=8,
)
# the attack as measured: streams held for as long as the attackers like (the stream
# budgets are tested on their own below), so only admission stands in the way
HELD = dataclasses.replace(SMALL, request_timeout_s=5.0, stream_idle_s=600.0)


@dataclass
class Tally:
    answered: int = 0
    refused: int = 0
    cut: int = 0  # admitted streams the server ended (idle budget, lifetime, eviction)


async def hold_stream(x: Any, target: P2PHost, period: float, tally: Tally) -> None:
    """One attacker stream, reopened whenever it ends: a StatusRequest every `period` s."""
    while True:
        try:
            stream = await x.new_stream(target.peer_id, [PROTO])
        except Exception:
            await trio.sleep(period)
            continue
        reader = FrameReader(stream)
        admitted = False
        try:
            while True:
                await write_frame(stream, StatusRequest().encode(), 5)
                answer = decode_response(await reader.read_frame(MAX_RESPONSE_FRAME, 5))
                if isinstance(answer, Error):
                    tally.refused += 1
                    break
                admitted = True
                tally.answered += 1
                await trio.sleep(period)
        except (FrameError, DecodeError):
            tally.cut += admitted
        finally:
            with trio.move_on_after(1), suppress(Exception):
                await stream.reset()
        await trio.sleep(period)


async def open_and_ask(x: Any, target: P2PHost) -> tuple[Any, Status | Error]:
    """A new sync stream with one StatusRequest answered; the stream is left open."""
    stream = await x.new_stream(target.peer_id, [PROTO])
    await write_frame(stream, StatusRequest().encode(), 5)
    answer = decode_response(await FrameReader(stream).read_frame(MAX_RESPONSE_FRAME, 5))
    assert isinstance(answer, Status | Error)
    return stream, answer


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s, _ = build_store(tmp_path / "target", CHAIN, 3)
    yield s
    s.close()


async def honest_round(client: SyncClient, target: P2PHost, blob_hash: bytes) -> float:
    """Status, a page of blocks and a blob from `target`; how long the three took."""
    start = trio.current_time()
    with trio.fail_after(10):
        status = await client.status(target.peer_id)
        entries = await client.blocks(target.peer_id, 1, 64)
        blob = await client.content(target.peer_id, blob_hash)
    assert status.height == 3 and [e.height for e in entries] == [1, 2, 3]
    assert len(blob) == 300_000
    return trio.current_time() - start


async def test_twenty_identities_from_one_address_leave_an_honest_peer_served(
    store: ChainStore,
) -> None:
    blob_hash = store.put_blob(os.urandom(300_000))
    target = P2PHost(config("slots-target"), CHAIN.chain_id)
    honest = P2PHost(config("slots-honest"), CHAIN.chain_id)  # no merit: a newcomer, on 127.0.0.1
    server = SyncServer(target, store, HELD)
    tally = Tally()
    async with running([target, honest]), bare_hosts(20, "127.0.0.2") as attackers:
        await honest.connect(target.addrs[0])
        await bare_connect(attackers, target)
        async with trio.open_nursery() as nursery:
            for x in attackers:
                for _ in range(4):
                    nursery.start_soon(hold_stream, x, target, 0.9, tally)
            await wait_for(lambda: tally.refused >= 40, 20)
            # the address holds its share and no more, however many identities it has
            assert server.slots.count(addr="127.0.0.2") == SMALL.max_streams_per_addr
            client = SyncClient(honest)
            times = [await honest_round(client, target, blob_hash) for _ in range(3)]
            assert max(times) < PROMPT_S, times
            assert server.slots.count(addr="127.0.0.2") <= SMALL.max_streams_per_addr
            nursery.cancel_scope.cancel()
    assert tally.answered > 0 and tally.refused >= 40


async def test_a_useful_peer_gets_a_slot_from_attackers_on_its_own_address(
    store: ChainStore, tmp_path: Path
) -> None:
    """Attackers share the honest peer's address (a NAT, this loopback): merit decides."""
    blob_hash = store.put_blob(os.urandom(300_000))
    target = P2PHost(config("merit-target"), CHAIN.chain_id)
    useful = P2PHost(config("merit-useful"), CHAIN.chain_id)
    newcomer = P2PHost(config("merit-newcomer"), CHAIN.chain_id)
    useful_store, _ = build_store(tmp_path / "useful", CHAIN, 1)
    model_hash = useful_store.put_blob(b"a block's model" * 1000)
    SyncServer(useful, useful_store)
    server = SyncServer(target, store, HELD)
    tally = Tally()
    try:
        async with (
            running([target, useful, newcomer]),
            bare_hosts(20, "127.0.0.1") as attackers,
        ):
            await useful.connect(target.addrs[0])
            await newcomer.connect(target.addrs[0])
            # the target fetched a block's model from `useful`: that earns it merit
            got = await SyncClient(target).content_from_any([useful.peer_id], model_hash)
            assert got == useful_store.get_blob(model_hash)
            assert target.merit.is_useful(useful.peer_id)
            await bare_connect(attackers, target)
            async with trio.open_nursery() as nursery:
                for x in attackers:
                    for _ in range(4):
                        nursery.start_soon(hold_stream, x, target, 0.9, tally)
                await wait_for(lambda: tally.refused >= 40, 20)
                assert server.slots.count(addr="127.0.0.1") == SMALL.max_streams_per_addr
                # a peer that only asks, from the same address, finds no room...
                with pytest.raises(SyncError, match="address"):
                    await SyncClient(newcomer).status(target.peer_id)
                # ...the useful one evicts an attacker's idle stream and is served at once
                client = SyncClient(useful)
                times = [await honest_round(client, target, blob_hash) for _ in range(3)]
                assert max(times) < PROMPT_S, times
                assert server.slots.evicted >= 1  # the first call made room; later ones may find it
                await wait_for(lambda: tally.cut >= 1, 5)  # the attacker saw its stream go
                nursery.cancel_scope.cancel()
    finally:
        useful_store.close()


async def served_until_closed(limits: SyncLimits, store: ChainStore, period: float) -> Any:
    """One stream with a request every `period` s until the server closes it: (answers, s)."""
    target = P2PHost(config(f"budget-{period}-{limits.stream_lifetime_s}"), CHAIN.chain_id)
    server = SyncServer(target, store, limits)
    async with running([target]), bare_hosts(1, "127.0.0.5") as (x,):
        await bare_connect([x], target)
        stream = await x.new_stream(target.peer_id, [PROTO])
        reader, answers, start = FrameReader(stream), 0, trio.current_time()
        with suppress(FrameError), trio.fail_after(40):
            while True:
                await write_frame(stream, StatusRequest().encode(), 5)
                assert isinstance(decode_response(await reader.read_frame(4096, 5)), Status)
                answers += 1
                await trio.sleep(period)
        took = trio.current_time() - start
        await wait_for(lambda: len(server.slots) == 0, 5)  # the slot is free again
    return answers, took


async def test_a_stream_trickling_requests_just_inside_the_idle_limit_is_closed(
    store: ChainStore,
) -> None:
    """One request every 0.8 s passes the 1 s per-frame limit forever; 2.5 s in all ends it
    (after 4 answers, or 3 if a loaded machine stretches the waits)."""
    limits = SyncLimits(request_timeout_s=1.0, stream_idle_s=2.5)
    answers, took = await served_until_closed(limits, store, 0.8)
    assert 3 <= answers <= 4 and 2.3 <= took < 4.0, (answers, took)


async def test_a_busy_stream_ends_at_its_lifetime_or_request_count(store: ChainStore) -> None:
    lifetime = SyncLimits(stream_lifetime_s=1.5, max_requests_per_stream=10**6)
    answers, took = await served_until_closed(lifetime, store, 0.0)
    assert answers > 10 and 1.4 <= took < 2.5, (answers, took)
    answers, _ = await served_until_closed(SyncLimits(max_requests_per_stream=5), store, 0.0)
    assert answers == 5


async def test_the_address_limit_counts_every_identity_from_it(store: ChainStore) -> None:
    target = P2PHost(config("addr-target"), CHAIN.chain_id)
    limits = SyncLimits(max_streams_per_addr=8, max_streams_per_peer=4, request_timeout_s=10)
    server = SyncServer(target, store, limits)
    async with (
        running([target]),
        bare_hosts(3, "127.0.0.3") as crowd,
        bare_hosts(1, "127.0.0.4") as (other,),
    ):
        await bare_connect([*crowd, other], target)
        answers = [await open_and_ask(x, target) for x in crowd for _ in range(4)]
        served = [a for _, a in answers if isinstance(a, Status)]
        refused = [a for _, a in answers if isinstance(a, Error)]
        assert len(served) == 8 and len(refused) == 4
        assert all("address" in e.message for e in refused)
        assert server.slots.count(addr="127.0.0.3") == 8
        # another address has its own budget; one identity still has its own limit
        mine = [await open_and_ask(other, target) for _ in range(5)]
        assert [type(a) for _, a in mine] == [Status] * 4 + [Error]
        assert "concurrent" in mine[-1][1].message  # type: ignore[union-attr]
        # the address's budget comes back as its streams end
        for stream, _ in answers[:4]:
            await stream.reset()
        await wait_for(lambda: server.slots.count(addr="127.0.0.3") <= 4, 5)
        _, again = await open_and_ask(crowd[2], target)
        assert isinstance(again, Status)


async def test_slot_table_reserve_eviction_order_and_merit() -> None:
    """The admission rules alone, on made-up peers: no network needed."""
    merit = PeerMerit(ttl_s=60)
    table = SlotTable(SMALL, merit.is_useful)  # 16 slots, 4 reserved, 4 per peer, 8 per address
    askers = [ID(bytes([i]) * 34) for i in range(1, 10)]
    friend = ID(b"\xff" * 34)
    slots = []
    for i, peer in enumerate(askers[:6]):  # 6 identities x 2 streams on 6 addresses: 12
        for _ in range(2):
            got = table.admit(peer, f"10.0.0.{i}")
            assert isinstance(got, Slot)
            slots.append(got)
    assert table.admit(askers[6], "10.0.1.1") == "server busy"  # the reserve is not for askers
    merit.served(friend)
    reserved = [table.admit(friend, "10.0.2.1") for _ in range(4)]
    assert all(isinstance(s, Slot) for s in reserved) and table.evicted == 0
    assert table.admit(friend, "10.0.2.1") == "too many concurrent sync streams"
    # full: a useful peer takes the oldest idle slot of an asker; busy ones go last
    slots[0].busy = True
    other_friend = ID(b"\xfe" * 34)
    with merit.fetching(other_friend):  # we are downloading from it: useful for as long
        got = table.admit(other_friend, "10.0.3.1")
        assert isinstance(got, Slot)
    assert slots[1].evicted and slots[1].scope.cancel_called and not slots[0].evicted
    assert table.admit(other_friend, "10.0.3.1") == "server busy"  # merit ended with the fetch
    # a useful peer never evicts another useful peer
    for s in reserved:
        assert not s.evicted
    assert len(table) == 16
