"""Names for the keys and peer ids the inspect commands print, from a testnet's homes.

A testnet (`zkpot testnet init`) lays its nodes out as sibling homes (node0, node1, ...)
under one directory, beside its `testnet.json`. When a command is pointed at one of them
with `--home`, the siblings' keys say which key or peer id is which node, so tables print
"node2", not a key prefix. Any other home (a joined node's, a container's /data) gets no
names: its parent directory is not ours to scan. The names are local knowledge (the directory names), never the network's:
a peer's self-chosen name would be a claim anyone could make.
"""

from __future__ import annotations

from pathlib import Path

from node.home import Home, HomeError
from p2p.identity import peer_id_of_key

TESTNET_FILE = "testnet.json"  # what `zkpot testnet init` writes beside its homes
Names = dict[str, str]  # key hex or peer id (base58) -> the home's directory name


def names_near(home: str | Path | None) -> Names:
    """Each sibling home's name by its key and peer id; {} outside a testnet's directory.

    Unreadable directories and key files are skipped: naming is a convenience, and a
    command must not fail because a neighbour's file is odd.
    """
    if home is None:
        return {}
    parent = Path(home).resolve().parent
    names: Names = {}
    try:
        if not (parent / TESTNET_FILE).is_file():
            return {}
        entries = sorted(parent.iterdir())
    except OSError:
        return {}
    for entry in entries:
        try:
            public = Home(entry).load_key().public
        except (OSError, HomeError, ValueError):
            continue
        names[public.hex()] = entry.name
        names[str(peer_id_of_key(public))] = entry.name
    return names
