"""Who we refuse: penalty scores and bans by peer identity, and the addresses they ban.

A peer's score decays; past the threshold the peer is banned for `ban_s`. An identity
is cheap, an address is not, so a ban also marks the address (`p2p.addrs.addr_key`) the
peer last connected from, and the connection gate (p2p.hardening, patch 6) refuses that
address before the handshake while either
- no peer in good standing uses it (a lone offender coming back), or
- `addr_ban_after` identities from it are banned (one machine rotating identities).
An address that honest peers share with one offender (a NAT, a loopback testnet) stays
open; the offender itself is then refused by identity right after the Noise handshake
(patch 7), before the muxer, the notifees or any stream.

Pure bookkeeping over an explicit clock, so the rules are testable without a network;
memory is bounded (`max_tracked`) because identities cost an attacker nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass

from libp2p.peer.id import ID


@dataclass
class _Record:
    score: float = 0.0
    updated: float = 0.0
    banned_until: float = 0.0


class Standing:
    """Scores, bans and the address each peer came from, for one host."""

    def __init__(
        self,
        *,
        ban_threshold: float,
        decay_per_s: float,
        ban_s: float,
        addr_ban_after: int,
        max_tracked: int = 4096,
    ) -> None:
        self.ban_threshold = ban_threshold
        self.decay_per_s = decay_per_s
        self.ban_s = ban_s
        self.addr_ban_after = addr_ban_after
        self.max_tracked = max_tracked
        self._records: dict[ID, _Record] = {}
        self._addr_of: OrderedDict[ID, str] = OrderedDict()
        self._addr_bans: dict[str, dict[ID, float]] = {}  # address -> banned peer -> until

    # ------------------------------------------------------------------ identities

    def score(self, peer: ID, now: float) -> float:
        rec = self._records.get(peer)
        if rec is None:
            return 0.0
        return max(0.0, rec.score - (now - rec.updated) * self.decay_per_s)

    def penalise(self, peer: ID, points: float, now: float) -> float:
        """Add points to the decayed score; the new score (the caller bans past the threshold)."""
        rec = self._records.setdefault(peer, _Record(updated=now))
        rec.score = self.score(peer, now) + points
        rec.updated = now
        if len(self._records) > self.max_tracked:
            self._prune(now)
        return rec.score

    def ban(self, peer: ID, now: float) -> None:
        rec = self._records.setdefault(peer, _Record(updated=now))
        rec.banned_until = now + self.ban_s
        addr = self._addr_of.get(peer)
        if addr is not None:
            self._addr_bans.setdefault(addr, {})[peer] = rec.banned_until

    def is_banned(self, peer: ID, now: float) -> bool:
        rec = self._records.get(peer)
        return rec is not None and rec.banned_until > now

    def expire(self, now: float) -> list[ID]:
        """End the bans that are over (scores start again from 0); the peers unbanned."""
        ended = [p for p, r in self._records.items() if 0 < r.banned_until <= now]
        for peer in ended:
            self._records[peer] = _Record(updated=now)
        for addr, bans in list(self._addr_bans.items()):
            for peer, until in list(bans.items()):
                if until <= now:
                    del bans[peer]
            if not bans:
                del self._addr_bans[addr]
        self._prune(now)
        return ended

    def _prune(self, now: float) -> None:
        # forget peers whose score has decayed to nothing and who are not banned
        for peer in [
            p for p, r in self._records.items() if r.banned_until <= now and not self.score(p, now)
        ]:
            del self._records[peer]
        while len(self._records) > self.max_tracked:  # still too many: oldest updates go
            oldest = min(
                (p for p, r in self._records.items() if r.banned_until <= now),
                key=lambda p: self._records[p].updated,
                default=None,
            )
            if oldest is None:
                break
            del self._records[oldest]

    # ------------------------------------------------------------------ addresses

    def seen(self, peer: ID, addr: str) -> None:
        """`peer` just authenticated from `addr` (an `addr_key`)."""
        self._addr_of[peer] = addr
        self._addr_of.move_to_end(peer)
        while len(self._addr_of) > self.max_tracked:
            self._addr_of.popitem(last=False)

    def address_of(self, peer: ID) -> str | None:
        return self._addr_of.get(peer)

    def banned_identities(self, addr: str, now: float) -> int:
        return sum(1 for until in self._addr_bans.get(addr, {}).values() if until > now)

    def refuses_addr(self, addr: str, now: float, good: Callable[[], Collection[str]]) -> bool:
        """Refuse `addr` before the handshake? `good()`: where peers in good standing are
        (asked only when the address has a banned identity, so a clean address costs nothing)."""
        banned = self.banned_identities(addr, now)
        return banned > 0 and (banned >= self.addr_ban_after or addr not in good())
