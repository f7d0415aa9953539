"""A p2p node in its own OS process, for tests/test_p2p_procs.py.

Prints one JSON line {"addrs": [...], "peer_id": ...} once listening, then one line
"got <sha256 of payload>" per accepted gossip message; runs until killed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import trio

from p2p import HostConfig, P2PHost, SyncServer, TopicKind
from storage import ChainStore
from support.chainfactory import make_chain
from support.p2p_util import consensus_validator, seed


async def main(args: argparse.Namespace) -> None:
    chain = make_chain()
    config = HostConfig(
        seed=seed(args.name),
        listen=(f"/ip4/127.0.0.1/tcp/{args.port}",),
        bootstrap=tuple(args.bootstrap),
        reconnect_interval_s=0.5,
        target_peers=0,  # the test's topology (a line of relays) is what it tests
    )
    host = P2PHost(config, chain.chain_id)
    for kind in TopicKind:
        host.gossip.set_validator(kind, consensus_validator(chain))
    store = ChainStore.open(args.store) if args.store else None
    if store is not None:
        SyncServer(host, store)
    delivered = host.gossip.listen()
    async with host.run():
        print(json.dumps({"addrs": host.addrs, "peer_id": str(host.peer_id)}), flush=True)
        async for d in delivered:
            print("got", hashlib.sha256(d.raw).hexdigest(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument("--store")
    trio.run(main, parser.parse_args())
    sys.exit(0)
