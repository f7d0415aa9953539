"""What a key is on a chain: participant, publisher, both, or an observer."""

from __future__ import annotations

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


def roles_of(genesis: Genesis, key: bytes) -> Roles:
    return Roles(key in genesis.participants, key == genesis.publisher)
