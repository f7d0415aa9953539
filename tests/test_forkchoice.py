"""Fork choice: heaviest cumulative proven score, ties to the lower hash, never across finality."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.crypto import sha256
from consensus.errors import ForkChoiceError
from consensus.forkchoice import ForkChoice, Placement, placement

G = sha256(b"genesis")


def h(name: str) -> bytes:
    return sha256(name.encode())


def _best_leaf(blocks: list[tuple[bytes, bytes, int]]) -> bytes:
    """Reference: recompute every cumulative score from scratch and take the max."""
    parent = {b: p for b, p, _ in blocks}
    k = {b: s for b, _, s in blocks}

    def score(b: bytes) -> int:
        total = 0
        while b != G:
            total += k[b]
            b = parent[b]
        return total

    return min((-score(b), b) for b, _, _ in blocks)[1] if blocks else G


trees = st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 5)), min_size=1, max_size=30)


def _build(spec: list[tuple[int, int]]) -> list[tuple[bytes, bytes, int]]:
    """Turn (parent choice, k) pairs into a random tree rooted at genesis."""
    blocks: list[tuple[bytes, bytes, int]] = []
    for i, (choice, k) in enumerate(spec):
        options = [G] + [b for b, _, _ in blocks]
        parent = options[choice % len(options)]
        blocks.append((h(f"b{i}"), parent, k))
    return blocks


def _topological_shuffle(
    blocks: list[tuple[bytes, bytes, int]], seed: int
) -> list[tuple[bytes, bytes, int]]:
    rng = random.Random(seed)
    known = {G}
    pending = list(blocks)
    out = []
    while pending:
        ready = [b for b in pending if b[1] in known]
        pick = rng.choice(ready)
        pending.remove(pick)
        known.add(pick[0])
        out.append(pick)
    return out


def _line(n: int) -> ForkChoice:
    """Blocks c1..cn on genesis, each of score 1, finality depth 2."""
    fc = ForkChoice(G, finality_depth=2)
    prev = G
    for i in range(1, n + 1):
        fc.on_block(h(f"c{i}"), prev, 1)
        prev = h(f"c{i}")
    return fc


@settings(max_examples=200)
@given(spec=trees, seed1=st.integers(0, 2**32), seed2=st.integers(0, 2**32))
def test_same_blocks_in_any_order_give_the_same_head(
    spec: list[tuple[int, int]], seed1: int, seed2: int
) -> None:
    blocks = _build(spec)
    heads = []
    for seed in (seed1, seed2):
        fc = ForkChoice(G, finality_depth=10_000)  # no finality interplay
        for b, p, k in _topological_shuffle(blocks, seed):
            fc.on_block(b, p, k)
        heads.append(fc.head)
    assert heads[0] == heads[1] == _best_leaf(blocks)


def test_heavier_branch_wins_even_if_shorter() -> None:
    fc = ForkChoice(G, finality_depth=100)
    fc.on_block(h("a1"), G, 1)
    fc.on_block(h("a2"), h("a1"), 1)
    fc.on_block(h("a3"), h("a2"), 1)
    assert fc.head == h("a3")
    fc.on_block(h("b1"), G, 4)
    assert fc.head == h("b1")


def test_equal_scores_go_to_the_lower_hash() -> None:
    fc = ForkChoice(G, finality_depth=100)
    x, y = sorted([h("x"), h("y")])
    fc.on_block(y, G, 3)
    fc.on_block(x, G, 3)
    assert fc.head == x
    fc2 = ForkChoice(G, finality_depth=100)
    fc2.on_block(x, G, 3)
    fc2.on_block(y, G, 3)
    assert fc2.head == x


def test_finality_follows_the_head_at_depth() -> None:
    fc = _line(5)
    assert fc.finalized == h("c3")
    assert fc.is_final(h("c2")) and fc.is_final(h("c3")) and not fc.is_final(h("c4"))


def test_reorg_never_crosses_finality() -> None:
    fc = _line(4)
    assert fc.finalized == h("c2")
    # A far heavier branch forking below the finalized block is refused...
    with pytest.raises(ForkChoiceError, match="finalized"):
        fc.on_block(h("evil1"), h("c1"), 100)
    assert fc.head == h("c4") and h("evil1") not in fc
    # ...while a heavier branch above finality still reorgs the head.
    fc.on_block(h("d3"), h("c2"), 50)
    assert fc.head == h("d3")
    assert fc.finalized == h("c2")


def test_placement_answers_each_case_in_order_of_precedence() -> None:
    fc = _line(4)
    refused, flying = {h("bad")}, {h("fly")}

    def where(block: str, parent: bytes) -> Placement:
        return placement(fc, h(block), parent, refused, flying)

    assert where("c3", h("c2")) is Placement.KNOWN
    assert where("bad", h("c4")) is Placement.REFUSED
    assert where("fly", h("c4")) is Placement.IN_FLIGHT
    assert where("kid", h("fly")) is Placement.AFTER_PARENT
    assert where("kid", h("nowhere")) is Placement.ORPHAN
    assert where("kid", h("c1")) is Placement.BELOW_FINALITY  # c2 is final
    assert where("kid", h("c2")) is Placement.NEW  # on the final block itself
    assert where("kid", h("c4")) is Placement.NEW
    importable = {p for p in Placement if p.importable}
    assert importable == {Placement.NEW, Placement.AFTER_PARENT}
    assert fc.head == h("c4") and h("kid") not in fc, "a question: nothing changes"


def test_unknown_parent_and_zero_score_are_refused_without_changing_state() -> None:
    fc = ForkChoice(G, finality_depth=2)
    with pytest.raises(ForkChoiceError, match="unknown"):
        fc.on_block(h("orphan"), h("nowhere"), 1)
    with pytest.raises(ForkChoiceError, match="at least 1"):
        fc.on_block(h("zero"), G, 0)
    assert fc.head == G and len(fc.nodes) == 1


def test_readding_a_block_is_a_no_op() -> None:
    fc = ForkChoice(G, finality_depth=2)
    n1 = fc.on_block(h("a"), G, 2)
    n2 = fc.on_block(h("a"), G, 2)
    assert n1 == n2 and len(fc.nodes) == 2


def test_replay_after_restart_restores_the_persisted_finality() -> None:
    """Replaying by height can finalize less than the live node did; finality never goes back."""
    live = ForkChoice(G, finality_depth=2)
    live.on_block(h("b0"), G, 3)
    live.on_block(h("b1"), h("b0"), 1)
    live.on_block(h("b2"), h("b1"), 1)
    live.on_block(h("b3"), h("b0"), 4)
    assert live.finalized == h("b0") and live.head == h("b3")
    replay = ForkChoice(G, finality_depth=2)
    for b, p, k in [("b0", G, 3), ("b1", h("b0"), 1), ("b3", h("b0"), 4), ("b2", h("b1"), 1)]:
        replay.on_block(h(b), p if isinstance(p, bytes) else h(p), k)
    assert replay.finalized == G  # what plain replay gives
    replay.restore_finalized(live.finalized)
    assert replay.finalized == live.finalized and replay.head == live.head
    with pytest.raises(ForkChoiceError, match="finalized"):
        replay.on_block(h("fork"), G, 50)
    replay.restore_finalized(G)  # never backwards
    assert replay.finalized == h("b0")


def test_preview_matches_on_block_without_changing_state() -> None:
    fc = ForkChoice(G, finality_depth=5)
    fc.on_block(h("a"), G, 2)
    node, becomes_head = fc.preview(h("b"), G, 3)
    assert becomes_head and node.score == 3 and h("b") not in fc and fc.head == h("a")
    with pytest.raises(ForkChoiceError):
        fc.preview(h("c"), h("nowhere"), 1)
    assert fc.on_block(h("b"), G, 3) == node and fc.head == h("b")
