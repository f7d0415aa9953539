"""Typed errors of the protocol core.

Decoding and validation only ever raise these, so the shell can catch exactly
them at its trust boundary and turn them into a penalty or a user message.
"""

from __future__ import annotations


class ConsensusError(Exception):
    """Base of every error the consensus package raises on bad input."""


class DecodeError(ConsensusError):
    """Bytes that are not a well-formed, canonical, in-limits encoding."""


class InvalidError(ConsensusError):
    """A well-formed object that breaks a protocol rule."""


class ForkChoiceError(ConsensusError):
    """A block fork choice cannot take (unknown parent, conflicts with finality)."""
