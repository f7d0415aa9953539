"""What a key is on a chain: participant, publisher, both, or an observer."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from consensus.types import Genesis


@dataclass(frozen=True)
class Roles:
    participant: bool
    publisher: bool

    @property
    def name(self) -> str:
        """'participant', 'publisher', 'participant+publisher' or 'observer'."""
        parts = [
            n for n, on in (("participant", self.participant), ("publisher", self.publisher)) if on
        ]
        return "+".join(parts) or "observer"


def roles_of(genesis: Genesis, key: bytes, participants: Collection[bytes]) -> Roles:
    """`participants`: the set that counts now (consensus.membership: the head's roster)."""
    return Roles(key in participants, key == genesis.publisher)
