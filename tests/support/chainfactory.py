"""Builds real, signed protocol objects for tests: a small chain's genesis, reveals, txs, blocks.

`hash_proof` stands in for the zk proof in tests of the pure rules only: it binds
batch, commitment and k exactly as the real verifier's public instances do, so a
rule that forgets to pass one of them is caught. Real ezkl proofs are tested in
the prover's tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from consensus import rules, secagg
from consensus.crypto import SigningKey, sha256
from consensus.merkle import merkle_proof, merkle_root
from consensus.rules import sign
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

BATCH = 4
SHAPE = (2, 3)
CLASSES = 10


def hash_proof(batch: EvalBatch, commitment: bytes, k: int) -> bytes:
    return sha256(b"test-proof" + batch.hash() + commitment + k.to_bytes(4, "big"))


def hash_verify(proof: bytes, batch: EvalBatch, commitment: bytes, k: int) -> bool:
    return proof == hash_proof(batch, commitment, k)


def model_commitment(model: bytes) -> bytes:
    """Test stand-in for the KZG commitment of a model blob."""
    return sha256(b"commit" + model)


def model_score(model: bytes, batch: EvalBatch) -> int:
    """Test stand-in for the plain evaluator: the model blob carries its k in byte 0."""
    return model[0]


def make_batch(index: int) -> EvalBatch:
    n = BATCH * SHAPE[0] * SHAPE[1]
    inputs = struct.pack(f"<{n}i", *[(index * 7 + i * 13) % 4096 - 2048 for i in range(n)])
    labels = bytes((index + i) % CLASSES for i in range(BATCH))
    return EvalBatch(index=index, inputs=inputs, labels=labels)


def mask_key_for(participant: bytes, rnd: int) -> bytes:
    """A valid mask public key (v4's commits need one under an aggregating rule), fixed
    per participant and round: tests that never mask need only its validity."""
    return secagg.mask_public(secagg.mask_secret(sha256(participant + rnd.to_bytes(8, "big"))))


@dataclass
class Chain:
    participants: list[SigningKey]
    publisher: SigningKey
    genesis: Genesis
    batches: list[EvalBatch]
    cid: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.chain_id = chain_id(self.genesis)

    def key_of(self, public: bytes) -> SigningKey:
        return next(k for k in self.participants if k.public == public)

    def commit(self, who: SigningKey, rnd: int, parent: bytes, model: bytes) -> CommitTx:
        binding = rules.commit_binding(
            self.chain_id, who.public, rnd, parent, model_commitment(model)
        )
        key = mask_key_for(who.public, rnd) if self.genesis.rule.name != "winner" else b""
        tx = CommitTx(rnd, parent, who.public, binding, mask_key=key, signature=bytes(64))
        return sign(tx, who, self.chain_id)

    def reveal(self, rnd: int, sealed: list[bytes]) -> Reveal:
        leaves = [b.hash() for b in self.batches]
        r = Reveal(
            rnd,
            self.batches[rnd],
            tuple(merkle_proof(leaves, rnd)),
            tuple(sorted(sealed)),
            bytes(64),
        )
        return sign(r, self.publisher, self.chain_id)

    def proof(
        self, who: SigningKey, commit: CommitTx, batch: EvalBatch, k: int, model: bytes
    ) -> ProofTx:
        c = model_commitment(model)
        tx = ProofTx(
            commit.round, commit.hash(), who.public, c, k, hash_proof(batch, c, k), bytes(64)
        )
        return sign(tx, who, self.chain_id)

    def round_block(
        self,
        rnd: int,
        parent: bytes,
        height: int,
        scores: dict[int, int],
        proposer: int | None = None,
    ) -> tuple[Block, dict[int, bytes]]:
        """A valid block where participant i scores scores[i]; the best one proposes."""
        models = {
            i: bytes([k]) + b"model" + bytes([i, rnd]) + parent[:4] for i, k in scores.items()
        }
        commits = {i: self.commit(self.participants[i], rnd, parent, m) for i, m in models.items()}
        reveal = self.reveal(rnd, [c.hash() for c in commits.values()])
        proofs = {
            i: self.proof(self.participants[i], c, reveal.batch, scores[i], models[i])
            for i, c in commits.items()
        }
        ranking = rules.rank_proofs(reveal.batch, proofs.values())
        if proposer is None:
            who = self.key_of(ranking[0].participant)
        else:
            who = self.participants[proposer]
        rank = next(r.rank for r in ranking if r.participant == who.public)
        idx = self.participants.index(who)
        block = Block(
            rnd,
            parent,
            height,
            who.public,
            rank,
            reveal,
            tuple(sorted(commits.values(), key=lambda c: c.hash())),
            tuple(sorted(proofs.values(), key=lambda p: p.commit_id)),
            sha256(models[idx]),
            bytes(64),
        )
        return sign(block, who, self.chain_id), models


def make_chain(n: int = 3, num_batches: int = 8, finality_depth: int = 3) -> Chain:
    participants = sorted(
        (SigningKey(sha256(b"participant" + bytes([i]))) for i in range(n)),
        key=lambda k: k.public,
    )
    publisher = SigningKey(sha256(b"publisher"))
    batches = [make_batch(i) for i in range(num_batches)]
    genesis = Genesis(
        chain_name="test",
        timing=Timing(
            genesis_ms=1_700_000_000_000,
            round_ms=10_000,
            commit_ms=3_000,
            proof_ms=3_000,
            fallback_ms=1_000,
            max_rank=3,
        ),
        finality_depth=finality_depth,
        participants=tuple(k.public for k in participants),
        publisher=publisher.public,
        task=Task("digits", "digits-mlp", 1, 32, 50_000, "iid", 0, 7),
        eval_plan=EvalPlan(
            BATCH, num_batches, SHAPE, 8, CLASSES, merkle_root([b.hash() for b in batches])
        ),
        circuit=CircuitSpec(
            "polycommit", 32, 32, sha256(b"s"), sha256(b"c"), sha256(b"v"), sha256(b"r")
        ),
        initial_model_hash=sha256(b"initial model"),
    )
    return Chain(participants, publisher, genesis, batches)
