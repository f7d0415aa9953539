"""Peers named by DNS (`/dns4/<name>/tcp/<port>/p2p/<id>`), as a compose testnet names them.

Names are resolved on this machine (`localhost` from the hosts file), with real hosts.
"""

from __future__ import annotations

import multiaddr

from p2p import P2PHost
from p2p.host import resolve_addr
from support.chainfactory import make_chain
from support.p2p_util import config, receive, running, wait_for, wait_links

CHAIN = make_chain()


async def test_resolve_addr_maps_names_to_ip_and_leaves_ip_addresses_alone() -> None:
    ip = multiaddr.Multiaddr("/ip4/10.1.2.3/tcp/27100")
    assert await resolve_addr(ip) == [ip]
    got = await resolve_addr(multiaddr.Multiaddr("/dns4/localhost/tcp/27101"))
    assert got == [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/27101")]
    assert await resolve_addr(multiaddr.Multiaddr("/dns4/zkpot-no-such-host.invalid/tcp/1")) == []


def _port(host: P2PHost) -> int:
    return int(multiaddr.Multiaddr(host.addrs[0]).value_for_protocol("tcp"))


async def test_node_bootstraps_by_dns_name_and_gossips_both_ways() -> None:
    a = P2PHost(config("dns-a"), CHAIN.chain_id)
    async with running([a]):
        dns_addr = f"/dns4/localhost/tcp/{_port(a)}/p2p/{a.peer_id}"
        # an unresolvable peer next to the good one must not stop the bootstrap
        ghost = f"/dns4/zkpot-no-such-host.invalid/tcp/1/p2p/{P2PHost(config('ghost'), CHAIN.chain_id).peer_id}"
        b = P2PHost(
            config("dns-b", bootstrap=(ghost, dns_addr), reconnect_interval_s=0.2), CHAIN.chain_id
        )
        async with running([b]):
            await wait_for(lambda: b.is_connected(a.peer_id))
            await wait_links([a, b])
            commit = CHAIN.commit(CHAIN.participants[0], 0, CHAIN.chain_id, b"dns-model")
            await a.gossip.publish(commit)
            got = await receive(b, lambda d: d.item == commit)
            assert got.origin == a.peer_id
            back = CHAIN.commit(CHAIN.participants[1], 0, CHAIN.chain_id, b"dns-back")
            await b.gossip.publish(back)
            assert (await receive(a, lambda d: d.item == back)).origin == b.peer_id
