"""The honest node's policy and the block-import entry point, as plain values.

Policy cases are data (tests/vectors/policy.json): a list of what a node saw and
the decision it must take, like the consensus specs' fork-choice test vectors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from consensus import blocks, policy
from consensus.blocks import ParentInfo
from consensus.checks import CommitModel, EvaluateModel, VerifyProof
from consensus.errors import InvalidError
from consensus.forkchoice import ChainNode
from consensus.rules import Ranked, sign
from consensus.selection import Contribution
from consensus.strategy import RULES, Winner, rule_for
from consensus.types import CommitTx
from support import plaincheck
from support.chainfactory import (
    Chain,
    hash_verify,
    make_chain,
    model_commitment,
    model_score,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "policy.json").read_text())
MAX_RANK = 3


def b32(name: str) -> bytes:
    """Vector names as 32-byte values that sort as the names do."""
    return name.encode().ljust(32, b"\0")


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


@pytest.mark.parametrize("case", VECTORS["seal"], ids=_ids(VECTORS["seal"]))
def test_seal_vectors(case: dict[str, Any]) -> None:
    arrivals = [policy.Arrival(b32(c), b32(p), t) for c, p, t in case["arrivals"]]
    assert policy.seal(arrivals, case["deadline"]) == tuple(b32(c) for c in case["sealed"])
    # The shell's bookkeeping order never matters.
    assert policy.seal(reversed(arrivals), case["deadline"]) == policy.seal(
        arrivals, case["deadline"]
    )


def _commit(participant: str, rnd: int, parent: str, tag: str) -> CommitTx:
    return CommitTx(rnd, b32(parent), b32(participant), b32(tag), bytes(64))


@pytest.mark.parametrize("case", VECTORS["admit_commit"], ids=_ids(VECTORS["admit_commit"]))
def test_admit_commit_vectors(case: dict[str, Any]) -> None:
    held = [_commit(*h) for h in case["held"]]
    assert policy.admits_commit(held, _commit(*case["new"])) is case["admitted"]


@pytest.mark.parametrize("case", VECTORS["propose"], ids=_ids(VECTORS["propose"]))
def test_propose_vectors(case: dict[str, Any]) -> None:
    ranking = [Ranked(rank, b32(p), k, b32("c" + p)) for p, k, rank in case["ranking"]]

    def node(v: list[Any] | None) -> ChainNode | None:
        return None if v is None else ChainNode(b32(v[1]), b32("parent"), 2, v[0])

    decision = policy.proposal_decision(
        b32(case["me"]),
        ranking,
        case["rank_due"],
        MAX_RANK,
        node(case["candidate"]),
        node(case["best"]),
    )
    assert decision.value == case["decision"]


# --- block building and import -----------------------------------------------------------


@pytest.fixture
def chain() -> Chain:
    return make_chain()


def _round(chain: Chain, scores: dict[int, int]) -> tuple[Any, ...]:
    block, models = chain.round_block(0, chain.chain_id, 1, scores)
    commits = {c.hash(): c for c in block.commits}
    proofs = {p.commit_id: p for p in block.proofs}
    return block, models, commits, proofs


def test_built_block_is_the_block_validity_expects(chain: Chain) -> None:
    block, models, commits, proofs = _round(chain, {0: 3, 1: 2, 2: 1})
    ranking = policy.ranking_for(block.reveal, commits, proofs, chain.chain_id)
    me = ranking[0].participant
    built = policy.build_block(
        ParentInfo(chain.chain_id, -1, 0),
        me,
        block.reveal,
        ranking,
        commits,
        proofs,
        block.model_hash,
    )
    built = sign(built, chain.key_of(me), chain.chain_id)
    assert built == block
    model = models[chain.participants.index(chain.key_of(me))]
    assert (
        plaincheck.check_block(
            chain.genesis,
            chain.chain_id,
            ParentInfo(chain.chain_id, -1, 0),
            built,
            model,
            hash_verify,
            model_commitment,
            model_score,
        )
        == 3
    )


def test_ranking_leaves_out_proofs_of_commits_on_another_parent(chain: Chain) -> None:
    block, _, commits, proofs = _round(chain, {0: 3, 1: 2})
    other = next(iter(commits))
    commits = {**commits, other: dataclasses.replace(commits[other], parent=b32("fork"))}
    ranking = policy.ranking_for(block.reveal, commits, proofs, chain.chain_id)
    assert [r.commit_id for r in ranking] == [c for c in proofs if c != other]


def test_on_block_lists_every_expensive_check_once(chain: Chain) -> None:
    block, _, _, _ = _round(chain, {0: 3, 1: 2, 2: 1})
    pending = blocks.on_block(
        chain.genesis, chain.chain_id, ParentInfo(chain.chain_id, -1, 0), block
    )
    verifies = [c for c in pending.checks if isinstance(c, VerifyProof)]
    assert len(verifies) == len(block.proofs) == 3
    assert {(c.proof, c.commitment, c.k) for c in verifies} == {
        (p.proof, p.commitment, p.k) for p in block.proofs
    }
    assert CommitModel(block.model_hash) in pending.checks
    assert EvaluateModel(block.model_hash, block.reveal.batch) in pending.checks
    assert len(set(pending.checks)) == len(pending.checks) == 5


def test_conclude_reads_every_answer(chain: Chain) -> None:
    block, models, _, _ = _round(chain, {0: 3, 1: 2})
    model = models[chain.participants.index(chain.key_of(block.proposer))]
    pending = blocks.on_block(
        chain.genesis, chain.chain_id, ParentInfo(chain.chain_id, -1, 0), block
    )
    blobs = {block.model_hash: model}
    good = plaincheck.answer_with(pending.checks, blobs, hash_verify, model_commitment, model_score)
    assert blocks.conclude(pending, good) == 3
    for check in pending.checks:  # every answer matters: a missing or wrong one is a verdict
        missing = {c: a for c, a in good.items() if c != check}
        with pytest.raises(InvalidError):
            blocks.conclude(pending, missing)
        wrong = dict(good)
        if isinstance(check, VerifyProof):
            wrong[check] = False
        elif isinstance(check, CommitModel):
            wrong[check] = b"\x01" * 32
        else:
            wrong[check] = 2
        with pytest.raises(InvalidError):
            blocks.conclude(pending, wrong)


def test_on_block_refuses_cheap_faults_before_any_expensive_check(chain: Chain) -> None:
    block, _, _, _ = _round(chain, {0: 3, 1: 2})
    bad = sign(dataclasses.replace(block, rank=2), chain.key_of(block.proposer), chain.chain_id)
    with pytest.raises(InvalidError, match="claims 2"):
        blocks.on_block(chain.genesis, chain.chain_id, ParentInfo(chain.chain_id, -1, 0), bad)


def test_winner_is_the_default_rule_and_contributes_the_proposer_alone(chain: Chain) -> None:
    block, _, _, _ = _round(chain, {0: 3, 1: 2})
    rule = rule_for(chain.genesis)
    assert isinstance(rule, Winner) and RULES["winner"] is Winner
    assert rule.select(block.reveal.batch, block.proofs, b"") == (Contribution(block.proposer, 1),)
    assert rule.score(block) == 3
    stranger = sign(
        dataclasses.replace(block, proposer=b32("stranger")),
        chain.key_of(block.proposer),
        chain.chain_id,
    )
    with pytest.raises(InvalidError, match="no proof"):
        rule.score(stranger)


def test_phases_end_when_their_inputs_are_complete(chain: Chain) -> None:
    block, _, commits, proofs = _round(chain, {0: 3, 1: 2, 2: 1})
    keys = [k.public for k in chain.participants]
    arrivals = [policy.Arrival(commit_id, c.participant, 1) for commit_id, c in commits.items()]
    assert policy.commits_complete(keys, arrivals)
    assert not policy.commits_complete(keys, arrivals[:-1])
    assert not policy.commits_complete([*keys, b32("late")], arrivals)
    assert policy.proofs_complete(block.reveal, proofs)
    missing = dict(list(proofs.items())[1:])
    assert not policy.proofs_complete(block.reveal, missing)
