"""Stateless validity rules: signatures, the genesis Merkle root, sealing, ranking, blocks."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus import rules, secagg, selection
from consensus.blocks import ParentInfo
from consensus.crypto import SigningKey, sha256
from consensus.errors import InvalidError
from consensus.merkle import merkle_proof, merkle_root, verify_merkle_proof
from consensus.rules import sign
from consensus.types import WINNER_RULE, Block, Genesis, RuleSpec, Timing, chain_id
from support import plaincheck
from support.chainfactory import (
    Chain,
    hash_verify,
    make_batch,
    make_chain,
    model_commitment,
    model_score,
)


@pytest.fixture
def chain() -> Chain:
    return make_chain()


GENESIS_PARENT = ParentInfo(hash=b"", round=-1, height=0)


def _check(chain: Chain, block: Block, model: bytes, parent: ParentInfo | None = None) -> int:
    p = parent or ParentInfo(chain.chain_id, -1, 0)
    return plaincheck.check_block(
        chain.genesis, chain.chain_id, p, block, model, hash_verify, model_commitment, model_score
    )


def _proposer_model(chain: Chain, block: Block, models: dict[int, bytes]) -> bytes:
    return models[chain.participants.index(chain.key_of(block.proposer))]


def _flip(data: bytes, i: int = 0) -> bytes:
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]


# --- Merkle ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_merkle_proofs_verify_every_leaf_and_nothing_else(n: int) -> None:
    leaves = [sha256(bytes([i])) for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        proof = merkle_proof(leaves, i)
        assert verify_merkle_proof(root, n, i, leaves[i], proof)
        assert not verify_merkle_proof(root, n, i, sha256(b"other"), proof)
        assert not verify_merkle_proof(root, n, (i + 1) % n, leaves[i], proof) or n == 1
        assert not verify_merkle_proof(root, n, i, leaves[i], [*proof, bytes(32)])
        if proof:
            assert not verify_merkle_proof(root, n, i, leaves[i], proof[:-1])


def test_merkle_root_known_vector() -> None:
    """Pins the tree layout so a second implementation can check itself against it."""
    leaves = [sha256(b"a"), sha256(b"b"), sha256(b"c")]
    l0, l1, l2 = (sha256(b"\x00" + h) for h in leaves)
    expected = sha256(b"\x01" + sha256(b"\x01" + l0 + l1) + sha256(b"\x01" + l2 + bytes(32)))
    assert merkle_root(leaves) == expected


# --- genesis -----------------------------------------------------------------------------


def test_valid_genesis_passes(chain: Chain) -> None:
    rules.check_genesis(chain.genesis)


def test_genesis_whose_proposal_window_overruns_the_round_is_rejected(chain: Chain) -> None:
    timing = dataclasses.replace(chain.genesis.timing, max_rank=8)
    g = dataclasses.replace(chain.genesis, timing=timing)
    with pytest.raises(InvalidError, match="round_ms"):
        rules.check_genesis(g)


def test_genesis_with_unknown_partition_is_rejected(chain: Chain) -> None:
    g = dataclasses.replace(
        chain.genesis, task=dataclasses.replace(chain.genesis.task, partition="random")
    )
    with pytest.raises(InvalidError, match="partition"):
        rules.check_genesis(g)


def test_chain_id_changes_with_any_genesis_field(chain: Chain) -> None:
    g2 = dataclasses.replace(
        chain.genesis, timing=Timing(**{**vars(chain.genesis.timing), "round_ms": 10_001})
    )
    assert chain_id(g2) != chain.chain_id
    assert Genesis.decode(g2.encode()) == g2


# --- commits -----------------------------------------------------------------------------


def test_valid_commit_passes(chain: Chain) -> None:
    rules.check_commit(
        chain.genesis,
        chain.chain_id,
        chain.commit(chain.participants[0], 0, chain.chain_id, b"m"),
        chain.genesis.participants,
    )


def test_commit_with_tampered_signature_is_rejected(chain: Chain) -> None:
    tx = chain.commit(chain.participants[0], 0, chain.chain_id, b"m")
    bad = dataclasses.replace(tx, signature=_flip(tx.signature, 5))
    with pytest.raises(InvalidError, match="bad signature"):
        rules.check_commit(chain.genesis, chain.chain_id, bad, chain.genesis.participants)


@pytest.mark.parametrize("field", ["round", "parent", "binding"])
def test_commit_with_tampered_field_is_rejected(chain: Chain, field: str) -> None:
    tx = chain.commit(chain.participants[0], 1, chain.chain_id, b"m")
    value = getattr(tx, field)
    new = value + 1 if isinstance(value, int) else _flip(value)
    with pytest.raises(InvalidError, match="bad signature"):
        rules.check_commit(
            chain.genesis,
            chain.chain_id,
            dataclasses.replace(tx, **{field: new}),
            chain.genesis.participants,
        )


def test_commit_signed_for_another_chain_is_rejected(chain: Chain) -> None:
    tx = chain.commit(chain.participants[0], 0, chain.chain_id, b"m")
    other = sign(tx, chain.participants[0], sha256(b"another chain"))
    with pytest.raises(InvalidError, match="bad signature"):
        rules.check_commit(chain.genesis, chain.chain_id, other, chain.genesis.participants)


def test_commit_from_non_participant_is_rejected(chain: Chain) -> None:
    outsider = SigningKey(sha256(b"outsider"))
    tx = chain.commit(outsider, 0, chain.chain_id, b"m")
    with pytest.raises(InvalidError, match="not a participant of round 0"):
        rules.check_commit(chain.genesis, chain.chain_id, tx, chain.genesis.participants)


def test_commit_beyond_the_evaluation_plan_is_rejected(chain: Chain) -> None:
    tx = chain.commit(chain.participants[0], 8, chain.chain_id, b"m")
    with pytest.raises(InvalidError, match="beyond the evaluation plan"):
        rules.check_commit(chain.genesis, chain.chain_id, tx, chain.genesis.participants)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (b"", "0 bytes"),
        (b"\x05" * 5, "5 bytes"),  # the v2 review's garbage key
        (bytes(32), "identity point"),
        (b"\x04" + bytes(31), "not a curve point"),  # x = 4: x^3 + 3 is no square
        (b"\x01" + bytes(30) + b"\x40", "not a curve point"),  # bit 6 set
    ],
)
def test_an_aggregating_rules_commit_needs_a_real_mask_key(
    chain: Chain, key: bytes, reason: str
) -> None:
    """Attack 4 of the v2 review: a bad mask key passed the commit and made every honest
    member's masking fail mid-aggregation (they were dropped as silent). v4 refuses it at
    the commit, with the reason, and a block carrying such a commit is invalid."""
    g = dataclasses.replace(chain.genesis, rule=RuleSpec("best-share", 50, 3, 16))
    who = chain.participants[0]
    tx = chain.commit(who, 0, chain.chain_id, b"m")
    bad = sign(dataclasses.replace(tx, mask_key=key), who, chain.chain_id)
    with pytest.raises(InvalidError, match=reason):
        rules.check_commit(g, chain.chain_id, bad, g.participants)
    good = sign(dataclasses.replace(tx, mask_key=secagg.mask_public(7)), who, chain.chain_id)
    rules.check_commit(g, chain.chain_id, good, g.participants)
    # the winner rule masks nothing: its commits carry no key
    with pytest.raises(InvalidError, match="carry no mask key"):
        rules.check_commit(chain.genesis, chain.chain_id, good, chain.genesis.participants)


# --- reveals -----------------------------------------------------------------------------


def test_valid_reveal_passes(chain: Chain) -> None:
    rules.check_reveal(chain.genesis, chain.chain_id, chain.reveal(3, [sha256(b"c")]))


def test_reveal_of_a_batch_not_in_the_genesis_root_is_rejected(chain: Chain) -> None:
    r = chain.reveal(2, [])
    batch = dataclasses.replace(r.batch, inputs=_flip(r.batch.inputs, 7))
    forged = sign(dataclasses.replace(r, batch=batch), chain.publisher, chain.chain_id)
    with pytest.raises(InvalidError, match="does not match the genesis Merkle root"):
        rules.check_reveal(chain.genesis, chain.chain_id, forged)


def test_reveal_of_another_rounds_batch_is_rejected(chain: Chain) -> None:
    r = chain.reveal(2, [])
    forged = sign(dataclasses.replace(r, round=3), chain.publisher, chain.chain_id)
    with pytest.raises(InvalidError, match="must reveal batch 3"):
        rules.check_reveal(chain.genesis, chain.chain_id, forged)


def test_reveal_with_wrong_label_count_is_rejected(chain: Chain) -> None:
    r = chain.reveal(2, [])
    batch = dataclasses.replace(r.batch, labels=r.batch.labels[:-1])
    forged = sign(dataclasses.replace(r, batch=batch), chain.publisher, chain.chain_id)
    with pytest.raises(InvalidError, match="labels"):
        rules.check_reveal(chain.genesis, chain.chain_id, forged)


def test_reveal_not_signed_by_the_publisher_is_rejected(chain: Chain) -> None:
    r = sign(chain.reveal(2, []), chain.participants[0], chain.chain_id)
    with pytest.raises(InvalidError, match="bad signature"):
        rules.check_reveal(chain.genesis, chain.chain_id, r)


def test_reveal_with_tampered_sealed_set_is_rejected(chain: Chain) -> None:
    r = chain.reveal(2, [sha256(b"a")])
    forged = dataclasses.replace(r, sealed=(sha256(b"a"), sha256(b"b"))[::1])
    with pytest.raises(InvalidError, match="bad signature"):
        rules.check_reveal(chain.genesis, chain.chain_id, forged)


# --- proofs ------------------------------------------------------------------------------


MODELS = [bytes([i]) + b"model" for i in range(3)]


def _round(chain: Chain, sealed_ids: list[int] | None = None):  # type: ignore[no-untyped-def]
    ps = chain.participants
    commits = [chain.commit(p, 0, chain.chain_id, MODELS[i]) for i, p in enumerate(ps)]
    ids = [c.hash() for c in commits]
    sealed = ids if sealed_ids is None else [ids[i] for i in sealed_ids]
    reveal = chain.reveal(0, sealed)
    return commits, reveal


def test_valid_proof_passes(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[1], commits[1], reveal.batch, 3, MODELS[1])
    plaincheck.check_proof_tx(chain.genesis, chain.chain_id, reveal, commits[1], tx, hash_verify)


def test_proof_for_an_unsealed_commit_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain, sealed_ids=[0, 2])
    tx = chain.proof(chain.participants[1], commits[1], reveal.batch, 3, MODELS[1])
    with pytest.raises(InvalidError, match="not in the reveal's sealed set"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[1], tx, hash_verify
        )


def test_proof_claiming_another_k_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 2, MODELS[0])
    inflated = sign(dataclasses.replace(tx, k=4), chain.participants[0], chain.chain_id)
    with pytest.raises(InvalidError, match="does not verify"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[0], inflated, hash_verify
        )


def test_proof_against_another_participants_commit_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 2, MODELS[0])
    with pytest.raises(InvalidError, match="commit_id"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[1], tx, hash_verify
        )


def test_copier_resigning_someone_elses_proof_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 2, MODELS[0])
    stolen = sign(
        dataclasses.replace(tx, participant=chain.participants[1].public),
        chain.participants[1],
        chain.chain_id,
    )
    with pytest.raises(InvalidError, match="someone other"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[0], stolen, hash_verify
        )


def test_proof_with_k_above_batch_size_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 5, MODELS[0])
    with pytest.raises(InvalidError, match="exceeds the batch size"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[0], tx, hash_verify
        )


def test_proof_with_tampered_signature_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 2, MODELS[0])
    bad = dataclasses.replace(tx, signature=_flip(tx.signature, 63))
    with pytest.raises(InvalidError, match="bad signature"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[0], bad, hash_verify
        )


# --- ranking -----------------------------------------------------------------------------


@given(st.lists(st.integers(0, 4), min_size=3, max_size=3), st.permutations(range(3)))
def test_ranking_is_by_k_then_tiebreak_and_order_independent(
    ks: list[int], perm: list[int]
) -> None:
    chain = make_chain()
    commits, reveal = _round(chain)
    proofs = [
        chain.proof(p, commits[i], reveal.batch, ks[i], MODELS[i])
        for i, p in enumerate(chain.participants)
    ]
    a = rules.rank_proofs(reveal.batch, proofs)
    b = rules.rank_proofs(reveal.batch, [proofs[i] for i in perm])
    assert a == b
    assert [r.rank for r in a] == [1, 2, 3]
    for x, y in itertools.pairwise(a):
        assert x.k > y.k or (
            x.k == y.k
            and selection.tiebreak_key(reveal.batch.hash(), x.participant)
            < selection.tiebreak_key(reveal.batch.hash(), y.participant)
        )


def test_tiebreak_rotates_between_rounds(chain: Chain) -> None:
    firsts = {
        min(chain.participants, key=lambda p: selection.tiebreak_key(b.hash(), p.public)).public
        for b in chain.batches
    }
    assert len(firsts) > 1


# --- blocks ------------------------------------------------------------------------------


def test_valid_block_passes_and_scores_the_proposers_k(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1})
    assert _check(chain, block, _proposer_model(chain, block, models)) == 4


def test_fallback_proposer_with_its_true_rank_passes(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1}, proposer=0)
    assert block.rank == 2
    assert _check(chain, block, models[0]) == 3


def test_block_claiming_a_better_rank_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1}, proposer=0)
    liar = sign(dataclasses.replace(block, rank=1), chain.participants[0], chain.chain_id)
    with pytest.raises(InvalidError, match="claims 1"):
        _check(chain, liar, models[0])


def test_block_with_tampered_signature_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1})
    bad = dataclasses.replace(block, signature=_flip(block.signature))
    with pytest.raises(InvalidError, match="bad signature"):
        _check(chain, bad, _proposer_model(chain, block, models))


def test_block_whose_model_blob_mismatches_its_hash_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1})
    with pytest.raises(InvalidError, match="model_hash"):
        _check(chain, block, _proposer_model(chain, block, models) + b"x")


def test_copier_of_a_commit_cannot_open_it_under_its_own_key(chain: Chain) -> None:
    """A copier re-signs the best participant's binding before the reveal (C itself is hidden).

    After the reveal it re-signs the winner's proof, disclosing the winner's C: the
    binding includes the winner's key, so C does not open the copier's commit.
    """
    honest, copier = chain.participants[0], chain.participants[1]
    model = bytes([4]) + b"honest model"
    c_honest = chain.commit(honest, 0, chain.chain_id, model)
    c_copy = sign(dataclasses.replace(c_honest, participant=copier.public), copier, chain.chain_id)
    reveal = chain.reveal(0, [c_honest.hash(), c_copy.hash()])
    p_honest = chain.proof(honest, c_honest, reveal.batch, 4, model)
    p_copy = sign(
        dataclasses.replace(p_honest, participant=copier.public, commit_id=c_copy.hash()),
        copier,
        chain.chain_id,
    )
    plaincheck.check_proof_tx(
        chain.genesis, chain.chain_id, reveal, c_honest, p_honest, hash_verify
    )
    with pytest.raises(InvalidError, match="does not open the commit's binding"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, c_copy, p_copy, hash_verify
        )


def test_copier_cannot_propose_with_a_model_that_does_not_match_its_commitment(
    chain: Chain,
) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1})
    winner = chain.participants.index(chain.key_of(block.proposer))
    other = next(i for i in range(3) if i != winner)
    forged = sign(
        dataclasses.replace(block, model_hash=sha256(models[other])),
        chain.key_of(block.proposer),
        chain.chain_id,
    )
    with pytest.raises(InvalidError, match="does not match the proposer's commitment"):
        _check(chain, forged, models[other])


def test_proof_of_another_length_is_rejected(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 2, MODELS[0])
    padded = sign(
        dataclasses.replace(tx, proof=tx.proof + b"\x00"), chain.participants[0], chain.chain_id
    )
    with pytest.raises(InvalidError, match="proofs are 32"):
        plaincheck.check_proof_tx(
            chain.genesis, chain.chain_id, reveal, commits[0], padded, hash_verify
        )


def test_a_verifier_that_raises_is_a_rejection_not_a_crash(chain: Chain) -> None:
    commits, reveal = _round(chain)
    tx = chain.proof(chain.participants[0], commits[0], reveal.batch, 2, MODELS[0])

    def broken(*args: object) -> bool:
        raise IndexError("label out of range")

    with pytest.raises(InvalidError, match="IndexError"):
        plaincheck.check_proof_tx(chain.genesis, chain.chain_id, reveal, commits[0], tx, broken)


def test_block_whose_model_scores_differently_in_the_clear_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1})
    model = _proposer_model(chain, block, models)
    # Same commitment function input can't change, so swap the evaluator instead.
    with pytest.raises(InvalidError, match="in the clear"):
        plaincheck.check_block(
            chain.genesis,
            chain.chain_id,
            ParentInfo(chain.chain_id, -1, 0),
            block,
            model,
            hash_verify,
            model_commitment,
            lambda m, b: model_score(m, b) - 1,
        )


def test_block_including_an_unsealed_commit_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 3, 1: 4, 2: 1})
    reveal = chain.reveal(0, list(block.reveal.sealed[:-1]))
    forged = sign(
        dataclasses.replace(block, reveal=reveal), chain.key_of(block.proposer), chain.chain_id
    )
    with pytest.raises(InvalidError, match="sealed"):
        _check(chain, forged, _proposer_model(chain, block, models))


def test_block_at_the_wrong_height_or_parent_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 2, {0: 3, 1: 4, 2: 1})
    with pytest.raises(InvalidError, match="height"):
        _check(chain, block, _proposer_model(chain, block, models))
    block, models = chain.round_block(0, sha256(b"elsewhere"), 1, {0: 3, 1: 4, 2: 1})
    with pytest.raises(InvalidError, match="parent"):
        _check(chain, block, _proposer_model(chain, block, models))


def test_block_repeating_the_parents_round_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(3, chain.chain_id, 1, {0: 3, 1: 4})
    with pytest.raises(InvalidError, match="does not follow"):
        _check(
            chain, block, _proposer_model(chain, block, models), ParentInfo(chain.chain_id, 3, 0)
        )


def test_block_whose_proposer_scored_zero_is_rejected(chain: Chain) -> None:
    block, models = chain.round_block(0, chain.chain_id, 1, {0: 0, 1: 0})
    with pytest.raises(InvalidError, match="at least 1"):
        _check(chain, block, _proposer_model(chain, block, models))


def test_block_batch_helper_is_deterministic() -> None:
    assert make_batch(3) == make_batch(3)
    assert make_batch(3).hash() != make_batch(4).hash()


def test_a_version_1_genesis_means_the_winner_rule_and_keeps_its_bytes() -> None:
    chain = make_chain(n=3)
    g = chain.genesis
    assert g.rule == WINNER_RULE and g.version() == 1
    assert Genesis.decode(g.encode()) == g
    named = dataclasses.replace(g, rule=RuleSpec("winner", 100, 1, 2))
    assert named.version() == 2 and Genesis.decode(named.encode()) == named
    rules.check_genesis(named)
    with pytest.raises(InvalidError, match="not one this node runs"):
        rules.check_genesis(dataclasses.replace(g, rule=RuleSpec("no-such-rule", 50, 3, 8)))
    with pytest.raises(InvalidError, match="min_members exceeds"):
        rules.check_genesis(dataclasses.replace(g, rule=RuleSpec("winner", 50, 4, 3)))
