"""The ZKPoT protocol as pure, deterministic functions over values (no I/O, no clock)."""

from __future__ import annotations

from consensus.crypto import SigningKey, sha256, verify_signature
from consensus.errors import ConsensusError, DecodeError, ForkChoiceError, InvalidError
from consensus.forkchoice import ChainNode, ForkChoice, is_better
from consensus.types import (
    Block,
    CircuitSpec,
    CommitTx,
    EvalBatch,
    EvalPlan,
    Genesis,
    ProofTx,
    Reveal,
    Task,
    Timing,
    chain_id,
)

__all__ = [
    "Block",
    "ChainNode",
    "CircuitSpec",
    "CommitTx",
    "ConsensusError",
    "DecodeError",
    "EvalBatch",
    "EvalPlan",
    "ForkChoice",
    "ForkChoiceError",
    "Genesis",
    "InvalidError",
    "ProofTx",
    "Reveal",
    "SigningKey",
    "Task",
    "Timing",
    "chain_id",
    "is_better",
    "sha256",
    "verify_signature",
]
