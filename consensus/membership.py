"""The participant set as chain state (protocol v3): a pure function of the chain.

The genesis names the first participants. A block may carry Membership changes: an
admission (signed by the publisher, carrying the newcomer's own JoinRequest
signature), a removal (signed by the publisher) or an exit (signed by the leaving
participant), each taking effect from a stated later round. The participants of
round t on top of block P are the tenures that the changes carried by P and its
ancestors give, open at t. Each node folds the changes block by block (`apply`), so a
reorg takes the other branch's roster: nothing is ever undone. docs/protocol.md §11.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

from consensus.crypto import short
from consensus.errors import InvalidError
from consensus.rules import check_signature
from consensus.types import (
    ADMIT,
    EXIT,
    MAX_MEMBERSHIP_PER_BLOCK,
    MAX_PARTICIPANTS,
    REMOVE,
    Genesis,
    JoinRequest,
    Membership,
)

MAX_NOTICE = 1024  # a change takes effect at most this many rounds after its block
KIND_NAMES = {ADMIT: "admission", EXIT: "exit", REMOVE: "removal"}


@dataclass(frozen=True)
class Tenure:
    key: bytes
    joined: int  # the first round it is a participant
    left: int | None = None  # the first round it no longer is (None: open)

    def holds(self, rnd: int) -> bool:
        return self.joined <= rnd and (self.left is None or rnd < self.left)


@dataclass(frozen=True)
class Roster:
    """Every tenure so far, sorted by (key, joined); at most one open per key."""

    tenures: tuple[Tenure, ...]
    # protocol v5: (key, first round it may be selected again), sorted (consensus.evidence)
    excluded: tuple[tuple[bytes, int], ...] = ()

    def excluded_at(self, rnd: int) -> frozenset[bytes]:
        """Who no selection of round `rnd` may include (a round after this roster's block)."""
        return frozenset(k for k, until in self.excluded if rnd < until)

    def at(self, rnd: int) -> frozenset[bytes]:
        """The participants of round `rnd`."""
        return frozenset(t.key for t in self.tenures if t.holds(rnd))

    def current(self, key: bytes) -> Tenure | None:
        """`key`'s open tenure (joined, possibly from a future round), if any."""
        return next((t for t in self.tenures if t.key == key and t.left is None), None)

    def eventual(self) -> frozenset[bytes]:
        """Who will be a participant once every change already carried takes effect."""
        return frozenset(t.key for t in self.tenures if t.left is None)

    def last_left(self, key: bytes) -> int:
        return max((t.left for t in self.tenures if t.key == key and t.left is not None), default=0)


def genesis_roster(genesis: Genesis) -> Roster:
    return Roster(tuple(Tenure(k, 0) for k in genesis.participants))


def check_signatures(genesis: Genesis, chain_id: bytes, tx: Membership) -> None:
    """An admission carries the newcomer's JoinRequest signature and the publisher's; a
    removal the publisher's; an exit the leaving participant's."""
    if tx.kind == ADMIT:
        check_signature(JoinRequest(tx.key, tx.request), tx.key, chain_id)
    check_signature(tx, tx.key if tx.kind == EXIT else genesis.publisher, chain_id)


def check_change(
    genesis: Genesis, chain_id: bytes, roster: Roster, block_round: int, tx: Membership
) -> None:
    """Whether a block of round `block_round` may carry `tx` on top of `roster`."""
    what = f"Membership ({KIND_NAMES[tx.kind]} of {short(tx.key, 16)}…)"
    if not block_round < tx.from_round <= block_round + MAX_NOTICE:
        raise InvalidError(
            f"{what}: takes effect in round {tx.from_round}; a block of round {block_round} "
            f"may set rounds {block_round + 1}..{block_round + MAX_NOTICE}"
        )
    open_ = roster.current(tx.key)
    if tx.kind == ADMIT:
        if tx.key == genesis.publisher:
            raise InvalidError(f"{what}: the publisher cannot be a participant")
        if open_ is not None:
            raise InvalidError(f"{what}: already a participant (from round {open_.joined})")
        if tx.from_round < roster.last_left(tx.key):
            raise InvalidError(f"{what}: overlaps its previous tenure")
        if len(roster.eventual()) >= MAX_PARTICIPANTS:
            raise InvalidError(f"{what}: the set is full ({MAX_PARTICIPANTS} participants)")
    else:  # an exit or a removal
        if tx.request:
            raise InvalidError(f"{what}: only an admission carries a request")
        if open_ is None:
            raise InvalidError(f"{what}: not a participant")
        if tx.from_round <= open_.joined:
            raise InvalidError(f"{what}: it would leave before it joined (round {open_.joined})")
        if len(roster.eventual()) <= 1:
            raise InvalidError(f"{what}: the last participant cannot leave (no block could follow)")
    check_signatures(genesis, chain_id, tx)


def apply(
    genesis: Genesis,
    chain_id: bytes,
    roster: Roster,
    block_round: int,
    changes: Sequence[Membership],
) -> Roster:
    """The roster after a block of round `block_round` that carries `changes` (checked:
    sorted by hash, one per key, each valid in order); InvalidError at the first bad one."""
    hashes = [c.hash() for c in changes]
    if any(a >= b for a, b in itertools.pairwise(hashes)):
        raise InvalidError("Block: membership changes must be sorted by hash, without duplicates")
    if len({c.key for c in changes}) != len(changes):
        raise InvalidError("Block: two membership changes for one key")
    for tx in changes:
        check_change(genesis, chain_id, roster, block_round, tx)
        roster = _fold(roster, tx)
    return roster


def _fold(roster: Roster, tx: Membership) -> Roster:
    if tx.kind == ADMIT:
        tenures = (*roster.tenures, Tenure(tx.key, tx.from_round))
    else:
        tenures = tuple(
            replace(t, left=tx.from_round) if t.key == tx.key and t.left is None else t
            for t in roster.tenures
        )
    return replace(roster, tenures=tuple(sorted(tenures, key=lambda t: (t.key, t.joined))))


def pick(
    genesis: Genesis,
    chain_id: bytes,
    roster: Roster,
    block_round: int,
    pending: Sequence[Membership],
) -> tuple[Membership, ...]:
    """The honest proposer's choice: every pending change still valid on `roster` for a
    block of `block_round`, in hash order, one per key, at most MAX_MEMBERSHIP_PER_BLOCK."""
    chosen: list[Membership] = []
    keys: set[bytes] = set()
    for tx in sorted(pending, key=lambda t: t.hash()):
        if len(chosen) == MAX_MEMBERSHIP_PER_BLOCK or tx.key in keys:
            continue
        try:
            check_change(genesis, chain_id, roster, block_round, tx)
        except InvalidError:
            continue
        roster = _fold(roster, tx)
        chosen.append(tx)
        keys.add(tx.key)
    return tuple(chosen)
