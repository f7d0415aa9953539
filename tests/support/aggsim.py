"""One aggregation round in memory, with an adversary and an observer (protocol v4).

Honest members and the honest aggregator decide by consensus.aggpolicy, and every
message reaches them through the round topic's checks (consensus.aggcheck, the
per-selection bounds of node.aggstate.AggState) as on a node; the masks, pair
commitments, reveals and self seeds are consensus.secagg's real arithmetic over a
small basis (only the zk proofs are stand-ins: a proof here is just its k). An
adversary (one participant, or a coalition) plays a scripted strategy with its own
keys. `weakened=True` makes the honest members follow protocol v2's policy instead
(answer any selection that is the rule's over the proofs it lists, reveal for any
Dispute that names them, accept any structurally valid Dispute), so a test can show
that its attack works there.

The observer (`recover`) takes everything anyone published plus the adversary's own
secrets and models, and runs the linear algebra an attacker would: every honest
masked vector is an equation y = q + sum of signed pairwise masks + self mask over
unknowns (models, masks nobody revealed); known masks (the adversary's own pairs,
revealed shared points, unmasked self seeds) are substituted; an honest model is
recovered iff its unit vector is in the equations' row space (exact, mod R).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus import aggcheck, aggpolicy, bn254, masking, rules, secagg
from consensus.crypto import SigningKey, sha256
from consensus.errors import InvalidError
from consensus.rules import sign
from consensus.secagg import (
    Complete,
    Dispute,
    MaskedUpdate,
    PairReveal,
    SeedShare,
    Selection,
    Unmask,
)
from consensus.strategy import BestShare
from consensus.types import AggregationSpec, CommitTx, Genesis, ProofTx, RuleSpec
from node.aggstate import AggState
from support.chainfactory import Chain, make_chain

N = 4  # parameters per model
BASIS = [bn254.mul(bn254.G, 11 + j) for j in range(N)]
PARENT_C = b"\x01" * 32
FALLBACK_MS = 1000


def lcommit(v: list[int]) -> bytes:
    """L(v): the linear part of the commitment, compressed (as a pair/self commitment)."""
    return bn254.compress(bn254.msm(BASIS, [x % bn254.R for x in v]))


@dataclass
class Party:
    key: SigningKey
    k: int
    model: list[int]
    secret: int
    commit: CommitTx = field(init=False)
    proof: ProofTx = field(init=False)

    @property
    def public(self) -> bytes:
        return self.key.public


Strategy = Callable[["Sim"], None]


class Sim:
    """The round. `parties[0..a)` are the adversary's; the rest are honest."""

    def __init__(
        self, ks: list[int], adversaries: int, *, weakened: bool = False, weak_shares: bool = False
    ) -> None:
        base = make_chain(n=len(ks))
        g = dataclasses.replace(
            base.genesis,
            rule=RuleSpec("best-share", 50, 3, 16),
            aggregation=AggregationSpec(0, N, sha256(b"basis"), bn254.compress(bn254.G)),
        )
        self.chain = Chain(base.participants, base.publisher, g, base.batches)
        self.genesis: Genesis = g
        self.chain_id = self.chain.chain_id
        self.batch = self.chain.batches[0]
        self.weakened = weakened
        self.weak_shares = weak_shares  # share a silent member's seed for any Complete
        self.rule = BestShare(g)
        self.parties: list[Party] = []
        for i, (key, k) in enumerate(zip(base.participants, ks, strict=True)):
            model = [(i + 1) * 7 + 3 * j - 5 for j in range(N)]
            p = Party(key, k, model, secagg.mask_secret(sha256(b"mask" + bytes([i]))))
            c = bytes([i + 2]) * 32
            binding = rules.commit_binding(self.chain_id, key.public, 0, self.chain_id, c)
            p.commit = sign(
                CommitTx(
                    0,
                    self.chain_id,
                    key.public,
                    binding,
                    mask_key=secagg.mask_public(p.secret),
                    signature=bytes(64),
                ),
                key,
                self.chain_id,
            )
            p.proof = sign(
                ProofTx(0, p.commit.hash(), key.public, c, k, b"\x00" * 32, bytes(64)),
                key,
                self.chain_id,
            )
            self.parties.append(p)
        self.adversary = self.parties[:adversaries]
        self.honest = self.parties[adversaries:]
        self.by_key = {p.public: p for p in self.parties}
        self.ranking = rules.rank_proofs(self.batch, [p.proof for p in self.parties])
        self.log: list[object] = []  # everything anyone published
        self.agg = AggState()  # what honest nodes accepted
        self.now = 0
        self.state: dict[bytes, _MemberState] = {p.public: _MemberState() for p in self.honest}
        self.react: Strategy = lambda sim: None  # the adversary's move at each quiet point
        self.dropped: set[bytes] = set()  # honest members gone after sending their update
        self.proofs = {p.commit.hash(): p.proof for p in self.parties}
        self.mask_keys = {p.public: p.commit.mask_key for p in self.parties}

    # ------------------------------------------------------------------ the network

    def rank_of(self, key: bytes) -> int:
        return next(r.rank for r in self.ranking if r.participant == key)

    def publish(self, msg: object) -> bool:
        """Everyone sees it (the observer too); honest nodes keep it if their checks pass."""
        self.log.append(msg)
        try:
            return self._accept(msg)
        except InvalidError:
            return False

    def _accept(self, msg: object) -> bool:
        a = self.agg
        if isinstance(msg, Selection):
            aggcheck.check_selection(self.genesis, self.chain_id, msg, set(self.by_key))
            committer = {c: p.participant for c, p in self.proofs.items()}
            sealed = set(committer)
            return aggcheck.proposer_sealed(msg, sealed, committer) and a.add_selection(
                msg, self.now
            )
        sel = a.selections.get(msg.selection)  # type: ignore[attr-defined]
        if sel is None:
            return False
        if isinstance(msg, MaskedUpdate):
            aggcheck.check_update(self.genesis, self.chain_id, sel, msg)
            return a.add_update(msg)
        if isinstance(msg, Complete):
            aggcheck.check_complete(self.chain_id, sel, msg)
            return a.add_complete(msg, self.now)
        if isinstance(msg, SeedShare):
            comp = a.completes.get(msg.selection)
            owner = a.updates.get(msg.selection, {}).get(msg.owner)
            if comp is None or owner is None or owner.hash() != msg.update:
                return False
            aggcheck.check_seed_share(self.chain_id, sel, comp, owner, msg)
            return a.add_share(msg)
        if isinstance(msg, Dispute):
            if self.weakened:  # v2: any pairs of members, signed by the proposer
                for pid in msg.pairs:
                    x, y = secagg.pair_of(pid)
                    if not (x < y and x in sel.members and y in sel.members):
                        return False
                rules.check_signature(msg, sel.proposer, self.chain_id)
            elif not aggcheck.check_dispute(self.chain_id, sel, msg, a.updates.get(sel.hash(), {})):
                return False
            return a.add_dispute(msg)
        if isinstance(msg, PairReveal):
            d = a.disputes.get(msg.selection)
            if d is None:
                return False
            aggcheck.check_reveal(self.chain_id, d, msg, self.mask_keys)
            return a.add_reveal(msg)
        assert isinstance(msg, Unmask)
        aggcheck.check_unmask(
            self.chain_id, sel, msg, a.updates.get(msg.selection, {}).get(msg.member)
        )
        return a.add_unmask(msg)

    def settle(self) -> None:
        """Until nobody has anything more to send: honest members act, then the adversary."""
        while True:
            before = len(self.log)
            for p in self.honest:
                self._member_step(p)
            self.react(self)
            if len(self.log) == before:
                return

    # ------------------------------------------------------------------ any party's moves

    def selection(self, proposer: Party, proofs: list[Party], attempt: int = 0) -> Selection:
        listed = [p.proof for p in proofs]
        chosen = self.rule.select(self.batch, listed, PARENT_C)
        members = tuple(sorted(c.participant for c in chosen))
        ids = tuple(sorted(p.commit.hash() for p in proofs))
        sel = Selection(0, self.chain_id, proposer.public, attempt, ids, members, bytes(64))
        return sign(sel, proposer.key, self.chain_id)

    def masked_update(
        self, p: Party, sel: Selection, lie_with: bytes | None = None
    ) -> MaskedUpdate:
        """p's honest masked vector; `lie_with`: mask that pair with another vector than
        the shared seed's, committed consistently (so only the pair disagrees)."""
        h = sel.hash()
        others = secagg.others_of(sel.members, p.public)
        masks = secagg.member_masks(
            p.secret,
            p.public,
            [(o, self.mask_keys[o]) for o in others],
            h,
            N,
            secagg.threshold(self.genesis.rule.min_members, len(sel.members)),
        )
        pair_masks = [(s, list(u)) for s, u in masks.pair_masks]
        if lie_with is not None:
            t = others.index(lie_with)
            pair_masks[t] = (pair_masks[t][0], [1, 2, 3, 4])
        y = list(p.model)
        for sign_, u in pair_masks:
            y = [a + sign_ * b for a, b in zip(y, u, strict=True)]
        y = [a + b for a, b in zip(y, masks.self_mask, strict=True)]
        pairs = tuple(lcommit(u) for _, u in pair_masks)
        self_c = lcommit(list(masks.self_mask))
        upd = secagg.unsigned_update(h, p.public, secagg.encode_vector(y), pairs, self_c, masks)
        return sign(upd, p.key, self.chain_id)

    def unmask(self, p: Party, sel: Selection) -> Unmask:
        seed = masking.self_seed(p.secret.to_bytes(32, "big"), sel.hash())
        return sign(Unmask(sel.hash(), p.public, seed, bytes(64)), p.key, self.chain_id)

    def complete(self, proposer: Party, sel: Selection) -> Complete | None:
        got = self.agg.updates.get(sel.hash(), {})
        if not set(sel.members) <= set(got):
            return None
        hashes = tuple(got[m].hash() for m in sel.members)
        return sign(Complete(sel.hash(), hashes, bytes(64)), proposer.key, self.chain_id)

    def dispute(self, proposer: Party, sel: Selection, pairs: list[bytes]) -> Dispute:
        return sign(
            Dispute(sel.hash(), tuple(sorted(pairs)), bytes(64)), proposer.key, self.chain_id
        )

    # ------------------------------------------------------------------ honest behaviour

    def _member_step(self, p: Party) -> None:
        ms = self.state[p.public]
        a = self.agg
        for h, sel in list(a.selections.items()):
            if h in ms.answered or h in ms.refused or p.public not in sel.members:
                continue
            if self._answers(p, sel):
                ms.answered.add(h)
                upd = self.masked_update(p, sel)
                self.publish(upd)
                ms.updates[h] = upd.hash()
            else:
                ms.refused.add(h)
        if p.public in self.dropped:  # gone once its vector is out
            return
        for h, d in list(a.disputes.items()):
            sel = a.selections[h]
            if h not in ms.answered:
                continue
            done = a.distrusted(p.public, within=h)
            if self.weakened:  # v2: every partner named, unless we unmasked this selection
                partners = (
                    []
                    if ms.unmasked == h
                    else [
                        y if x == p.public else x
                        for x, y in map(secagg.pair_of, d.pairs)
                        if p.public in (x, y) and (y if x == p.public else x) not in done
                    ]
                )
            else:
                partners = aggpolicy.partners_to_reveal(
                    p.public, sel, d, a.updates.get(h, {}), ms.unmasked is not None, done
                )
            for partner in partners:
                r = secagg.reveal_pair(p.secret, p.public, partner, self.mask_keys[partner], h)
                self.publish(sign(r, p.key, self.chain_id))
        completes = [(a.selections[h], c) for h, c in a.completes.items() if h in ms.answered]
        if self.weakened:
            choice = (
                None
                if ms.unmasked is not None
                else next(
                    (
                        s.hash()
                        for s, c in completes
                        if s.hash() not in a.disputes
                        and c.updates[s.members.index(p.public)] == ms.updates.get(s.hash())
                    ),
                    None,
                )
            )
        else:
            choice = aggpolicy.unmask_choice(
                p.public,
                completes,
                ms.updates,
                set(a.disputes),
                {s for s, r in a.reveals.items() if r},
                a.distrusted(p.public),
                ms.unmasked,
                a.recovering(p.public),
            )
        if choice is not None:
            ms.unmasked = choice
            self.publish(self.unmask(p, a.selections[choice]))
        if self.weak_shares:  # Bonawitz's recovery without v5's one-sum rule
            for h in list(a.completes):
                if h in ms.answered:
                    self._share_step(p, h, weak=True)
        elif ms.unmasked is not None and ms.unmasked in a.completes and not self.weakened:
            self._share_step(p, ms.unmasked)

    def _share_step(self, p: Party, h: bytes, *, weak: bool = False) -> None:
        """Dropout recovery: our share of each silent member's seed (node.aggmember);
        `weak`: for every member that has not unmasked this selection, whatever else."""
        a = self.agg
        sel = a.selections[h]
        updates = a.updates.get(h, {})
        done = {o for o, by in a.shares.get(h, {}).items() if p.public in by}
        if weak:
            unmasked = a.unmasks.get(h, {})
            owners = tuple(
                m
                for m in sel.members
                if m != p.public and m in updates and m not in unmasked and m not in done
            )
        else:
            owners = aggpolicy.shares_to_reveal(
                p.public,
                sel,
                a.completes[h],
                updates,
                set(a.unmasks.get(h, {})),
                {m for s, ums in a.unmasks.items() if s != h for m in ums},
                h,
                h in a.disputes,
                done,
                a.complete_ms[h],
                self.now,
                FALLBACK_MS // 2,
            ).owners
        for owner in owners:
            upd = updates[owner]
            sealed = upd.seed_shares[secagg.others_of(sel.members, owner).index(p.public)]
            value = secagg.open_share(p.secret, p.public, owner, self.mask_keys[owner], h, sealed)
            share = SeedShare(h, p.public, owner, upd.hash(), value.to_bytes(32, "big"), bytes(64))
            self.publish(sign(share, p.key, self.chain_id))

    def _answers(self, p: Party, sel: Selection) -> bool:
        listed = [self.proofs[c] for c in sel.proofs if c in self.proofs]
        chosen = self.rule.select(self.batch, listed, PARENT_C)
        rule_members = tuple(sorted(c.participant for c in chosen))
        if self.weakened:  # v2: the rule's over the proofs it lists
            return len(listed) == len(sel.proofs) and rule_members == sel.members
        ranking = rules.rank_proofs(self.batch, listed)
        rank = next((r.rank for r in ranking if r.participant == sel.proposer), None)
        view = aggpolicy.SelectionView(sel, self.agg.received_ms[sel.hash()], rank, rule_members)
        commit_of = {q.public: q.commit.hash() for q in self.parties}
        decision = aggpolicy.answer_decision(
            p.public,
            view,
            {c: -10 * FALLBACK_MS for c in self.proofs},  # every proof verified long before
            aggpolicy.droppable_proofs(sel, list(self.agg.selections.values()), commit_of),
            [0] + [i * FALLBACK_MS for i in range(1, self.genesis.timing.max_rank)],
            self.now,
            FALLBACK_MS // 2,
            self.agg.distrusted(p.public),
        )
        return decision.answer is aggpolicy.Answer.ANSWER

    def honest_aggregation(
        self, proposer: Party, attempts: int = 4, first: int = 0
    ) -> list[int] | None:
        """The in-turn honest aggregator's attempts (node.aggregator's loop, in memory):
        the aggregate W it computes, or None."""
        excluded: set[bytes] = set()
        for attempt in range(first, first + attempts):
            kept = [q for q in self.parties if q.public not in excluded]
            sel = self.selection(proposer, kept, attempt)
            self.publish(sel)
            self.settle()
            got = dict(self.agg.updates.get(sel.hash(), {}))
            missing = [m for m in sel.members if m not in got]
            wrong = [m for m in sel.members if m in got and not self._update_holds(got[m], sel)]
            pairs = [] if missing or wrong else secagg.disputed_pairs(got, sel.members)
            if pairs:
                self.publish(self.dispute(proposer, sel, pairs))
                self.settle()
                wrong = self._settle_pairs(sel, got, pairs)
            if missing or wrong:
                excluded.update(missing, wrong)
                if proposer.public in excluded:
                    return None
                continue
            comp = self.complete(proposer, sel)
            assert comp is not None
            self.publish(comp)
            self.settle()
            self.now += FALLBACK_MS  # the silent members' grace runs out: shares flow
            self.settle()
            seeds = self.seeds(sel)
            if not set(sel.members) <= set(seeds):
                return None
            return secagg.unmasked_sum(
                [secagg.decode_vector(got[m].vector, N) for m in sel.members],
                [seeds[m] for m in sel.members],
            )
        return None

    def seeds(self, sel: Selection) -> dict[bytes, bytes]:
        """The self seeds the aggregator holds: unmasked, or recovered from shares."""
        h = sel.hash()
        out = {m: u.seed for m, u in self.agg.unmasks.get(h, {}).items()}
        for owner, by in self.agg.shares.get(h, {}).items():
            t = secagg.threshold(self.genesis.rule.min_members, len(sel.members))
            if owner not in out and len(by) >= t:
                points = {
                    secagg.share_x(sel.members, m): int.from_bytes(x.share, "big")
                    for m, x in by.items()
                }
                out[owner] = secagg.recover_seed(points)
        return out

    def _update_holds(self, upd: MaskedUpdate, sel: Selection) -> bool:
        """The per-member check, with the model in the clear (the node's uses C_i - K)."""
        p = self.by_key[upd.member]
        others = secagg.others_of(sel.members, upd.member)
        y = secagg.decode_vector(upd.vector, N)
        want = bn254.add(
            bn254.msm(BASIS, [x % bn254.R for x in p.model]),
            bn254.decompress(upd.self_commitment),
            *[
                bn254.decompress(c)
                if masking.pair_sign(upd.member, o) > 0
                else bn254.neg(bn254.decompress(c))
                for o, c in zip(others, upd.pair_commitments, strict=True)
            ],
        )
        return bn254.msm(BASIS, y) == want

    def _settle_pairs(
        self, sel: Selection, got: dict[bytes, MaskedUpdate], pairs: list[bytes]
    ) -> list[bytes]:
        true = {
            pid: lcommit(masking.expand(secagg.true_pair_seed(r), N))
            for pid, r in self.agg.reveals.get(sel.hash(), {}).items()
        }
        return aggpolicy.named_by_reveals(sel, got, pairs, true)

    # ------------------------------------------------------------------ the observer

    def recover(self) -> dict[bytes, list[int]]:
        """Every honest model the observer (the adversary's keys + all gossip) can compute."""
        secrets = {p.public: p.secret for p in self.adversary}
        return recover(self.log, secrets, [p.public for p in self.honest], self.mask_keys)


@dataclass
class _MemberState:
    answered: set[bytes] = field(default_factory=set)
    refused: set[bytes] = field(default_factory=set)
    updates: dict[bytes, bytes] = field(default_factory=dict)  # selection -> our update's hash
    unmasked: bytes | None = None


def recover(
    log: list[object],
    adversary: dict[bytes, int],
    honest: list[bytes],
    mask_keys: dict[bytes, bytes],
) -> dict[bytes, list[int]]:
    """The attacker's linear algebra over everything published (see the module doc):
    `adversary` maps each coalition key to its mask secret; `mask_keys` every member's
    published mask key. Returns the honest models the equations determine, exactly."""
    selections = {m.hash(): m for m in log if isinstance(m, Selection)}
    seeds = {(m.selection, m.member): m.seed for m in log if isinstance(m, Unmask)}
    seeds.update(_recovered_seeds(log, selections, adversary, mask_keys))
    shared = {}
    for m in log:
        if isinstance(m, PairReveal):
            shared[secagg.pair_id(m.member, m.partner)] = bn254.decompress(m.shared)
    for me, secret in adversary.items():  # the adversary's own shared points with anyone
        for key, pub in mask_keys.items():
            if key != me:
                shared[secagg.pair_id(me, key)] = masking.shared_point(
                    secret, bn254.decompress(pub)
                )
    columns: dict[object, int] = {("q", h): i for i, h in enumerate(honest)}
    rows: list[tuple[dict[int, int], list[int]]] = []
    for m in log:
        if not isinstance(m, MaskedUpdate) or m.member not in honest:
            continue
        sel = selections.get(m.selection)
        if sel is None or m.member not in sel.members:
            continue
        n = len(m.vector) // secagg.FIELD_BYTES
        try:
            rhs = secagg.decode_vector(m.vector, n)
        except InvalidError:
            continue
        coeffs: dict[int, int] = {columns[("q", m.member)]: 1}
        for o in secagg.others_of(sel.members, m.member):
            s = masking.pair_sign(m.member, o)
            pid = secagg.pair_id(m.member, o)
            if pid in shared:
                u = masking.expand(masking.pair_seed(shared[pid], m.selection), n)
                rhs = [(a - s * b) % bn254.R for a, b in zip(rhs, u, strict=True)]
            else:
                col = columns.setdefault(("u", pid, m.selection), len(columns))
                coeffs[col] = (coeffs.get(col, 0) + s) % bn254.R
        seed = seeds.get((m.selection, m.member))
        if seed is not None:
            p = masking.expand(seed, n)
            rhs = [(a - b) % bn254.R for a, b in zip(rhs, p, strict=True)]
        else:
            col = columns.setdefault(("p", m.member, m.selection), len(columns))
            coeffs[col] = 1
        rows.append((coeffs, rhs))
    out = {}
    for i, h in enumerate(honest):
        value = _solve_for(rows, len(columns), i)
        if value is not None:
            out[h] = masking.to_signed(value)
    return out


def _recovered_seeds(
    log: list[object],
    selections: dict[bytes, Selection],
    adversary: dict[bytes, int],
    mask_keys: dict[bytes, bytes],
) -> dict[tuple[bytes, bytes], bytes]:
    """Self seeds the attacker holds enough shares of: published SeedShares plus the
    shares dealt to its own keys (it decrypts those), checked against the dealer's
    commitments, then interpolated wherever at least `len(seed_commitments)` hold."""
    points: dict[tuple[bytes, bytes], dict[int, int]] = {}
    updates = {(m.selection, m.member): m for m in log if isinstance(m, MaskedUpdate)}
    for m in log:
        if isinstance(m, SeedShare) and (m.selection, m.owner) in updates:
            sel = selections[m.selection]
            upd = updates[(m.selection, m.owner)]
            value = int.from_bytes(m.share, "big")
            if secagg.share_holds(upd, sel.members, m.member, value):
                points.setdefault((m.selection, m.owner), {})[
                    secagg.share_x(sel.members, m.member)
                ] = value
    for (h, owner), upd in updates.items():
        sel = selections.get(h)
        if sel is None or owner not in sel.members or owner not in mask_keys:
            continue
        for me, secret in adversary.items():
            if me == owner or me not in sel.members:
                continue
            others = secagg.others_of(sel.members, owner)
            if len(upd.seed_shares) != len(others):
                continue
            sealed = upd.seed_shares[others.index(me)]
            value = secagg.open_share(secret, me, owner, mask_keys[owner], h, sealed)
            if secagg.share_holds(upd, sel.members, me, value):
                points.setdefault((h, owner), {})[secagg.share_x(sel.members, me)] = value
    out = {}
    for (h, owner), pts in points.items():
        if len(pts) >= len(updates[(h, owner)].seed_commitments):
            out[(h, owner)] = secagg.recover_seed(pts)
    return out


def _solve_for(
    rows: list[tuple[dict[int, int], list[int]]], ncols: int, target: int
) -> list[int] | None:
    """The value of unknown `target` if the equations determine it (mod R), else None:
    eliminate every other unknown; the target is determined iff some combination of the
    rows has coefficient 1 on it and 0 elsewhere."""
    R = bn254.R
    order = [c for c in range(ncols) if c != target] + [target]
    mat = [([coeffs.get(c, 0) % R for c in order], list(rhs)) for coeffs, rhs in rows]
    pivot_row = 0
    for col in range(ncols):
        r = next((i for i in range(pivot_row, len(mat)) if mat[i][0][col]), None)
        if r is None:
            continue
        mat[pivot_row], mat[r] = mat[r], mat[pivot_row]
        inv = pow(mat[pivot_row][0][col], -1, R)
        prow, prhs = mat[pivot_row]
        prow = [v * inv % R for v in prow]
        prhs = [v * inv % R for v in prhs]
        mat[pivot_row] = (prow, prhs)
        for i in range(len(mat)):
            if i != pivot_row and mat[i][0][col]:
                f = mat[i][0][col]
                mat[i] = (
                    [(a - f * b) % R for a, b in zip(mat[i][0], prow, strict=True)],
                    [(a - f * b) % R for a, b in zip(mat[i][1], prhs, strict=True)],
                )
        pivot_row += 1
    last = ncols - 1
    for coeffs, rhs in mat:
        if coeffs[last] == 1 and not any(coeffs[:last]):
            return rhs
    return None
