"""Protocol objects and their limits.

Each is a frozen dataclass; its fields' wire kinds are its schema, checked at
decode time (see `consensus.encoding`). Times are integer milliseconds since
the Unix epoch; rates are integer parts-per-million: no floats anywhere.

(Over 300 lines on purpose: every object of the chain's core wire format, the block's
parts among them, in one place; protocol v2's round messages are consensus.secagg's.)
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.crypto import HASH_LEN, PUBKEY_LEN, SIG_LEN, UNSIGNED
from consensus.encoding import Bytes, ListOf, Signed, Struct, Text, UInt, Wire, wire

MAX_PARTICIPANTS = 256
MAX_EVAL_BATCH = 1024
MAX_NUM_BATCHES = 1 << 20
MAX_MERKLE_DEPTH = 20  # ceil(log2(MAX_NUM_BATCHES))
MAX_INPUT_DIMS = 4
MAX_BATCH_INPUT_BYTES = 512 * 1024
MAX_COMMITMENT_BYTES = 16 * 1024
MAX_PROOF_BYTES = 128 * 1024
MAX_CLASSES = 1000
MAX_NAME = 64
INPUT_ITEM_BYTES = 4  # each input element: int32, little-endian, at the plan's input scale

_HASH = Bytes(HASH_LEN, HASH_LEN)
_KEY = Bytes(PUBKEY_LEN, PUBKEY_LEN)
_SIG = Bytes(SIG_LEN, SIG_LEN)
_NAME = Text(1, MAX_NAME)
_MS = UInt(0, 2**62)
POINT_LEN = 32  # a compressed BN254 G1 point (consensus.bn254.compress)
MAX_REMAINDER = 1 << 16  # parameters of a model an averaging rule can aggregate


@dataclass(frozen=True)
class Timing(Wire):
    """The round clock: round r starts at genesis_ms + r * round_ms."""

    TAG = 10
    NAME = "Timing"
    MAX_BYTES = 256

    genesis_ms: int = wire(_MS)
    round_ms: int = wire(UInt(1, 2**40))
    commit_ms: int = wire(UInt(1, 2**40))  # commit deadline, after the round start
    proof_ms: int = wire(UInt(1, 2**40))  # proof deadline, after the commit deadline
    fallback_ms: int = wire(UInt(1, 2**40))  # delay between successive proposer ranks
    max_rank: int = wire(UInt(1, MAX_PARTICIPANTS))  # highest rank that may still propose


@dataclass(frozen=True)
class Task(Wire):
    """What participants train: dataset, architecture and hyper-parameters."""

    TAG = 11
    NAME = "Task"
    MAX_BYTES = 1024

    dataset: str = wire(_NAME)
    architecture: str = wire(_NAME)
    local_epochs: int = wire(UInt(1, 10_000))
    train_batch_size: int = wire(UInt(1, 1 << 16))
    learning_rate_ppm: int = wire(UInt(1, 10_000_000))
    partition: str = wire(_NAME)  # "iid" or "dirichlet"
    dirichlet_alpha_ppm: int = wire(UInt(0, 1 << 40))
    data_seed: int = wire(UInt(0, 2**63))


@dataclass(frozen=True)
class EvalPlan(Wire):
    """The publisher's held-out batches, fixed at genesis by a Merkle root."""

    TAG = 12
    NAME = "EvalPlan"
    MAX_BYTES = 256

    batch_size: int = wire(UInt(1, MAX_EVAL_BATCH))
    num_batches: int = wire(UInt(1, MAX_NUM_BATCHES))
    input_shape: tuple[int, ...] = wire(ListOf(UInt(1, 1 << 16), MAX_INPUT_DIMS, lo=1))
    input_scale_bits: int = wire(UInt(0, 30))
    num_classes: int = wire(UInt(2, MAX_CLASSES))
    merkle_root: bytes = wire(_HASH)


@dataclass(frozen=True)
class CircuitSpec(Wire):
    """sha256 of every circuit artifact: one circuit serves the whole chain."""

    TAG = 13
    NAME = "CircuitSpec"
    MAX_BYTES = 512

    commitment: str = wire(_NAME)  # "polycommit"
    commitment_bytes: int = wire(UInt(1, MAX_COMMITMENT_BYTES))  # length of every C
    proof_bytes: int = wire(UInt(1, MAX_PROOF_BYTES))  # length of every proof
    settings_hash: bytes = wire(_HASH)
    compiled_hash: bytes = wire(_HASH)
    vk_hash: bytes = wire(_HASH)
    srs_hash: bytes = wire(_HASH)


@dataclass(frozen=True)
class RuleSpec(Wire):
    """Protocol v2: the selection/aggregation rule (consensus.strategy) and its parameters."""

    TAG = 14
    NAME = "RuleSpec"
    MAX_BYTES = 256

    name: str = wire(_NAME)  # "winner" (v1) or "best-share"
    keep_percent: int = wire(UInt(1, 100))  # best-share: the best this share of the proofs
    min_members: int = wire(UInt(1, MAX_PARTICIPANTS))  # ... but never fewer than this
    max_members: int = wire(UInt(1, MAX_PARTICIPANTS))  # ... nor more
    # protocol v5: rounds a participant proven to misbehave (consensus.evidence) is left
    # out of every selection, from the round after the block that carries the evidence
    exclusion_rounds: int = wire(UInt(0, 1024), since=5, default=0)
    # protocol v6: the server optimizer on the aggregate (consensus.optimizer): "none"
    # (the aggregate is the next global model) or "momentum" (FedAvgM, beta = num/den,
    # the velocity kept at `velocity_scale` times the parameter scale) ...
    server: str = wire(_NAME, since=6, default="none")
    momentum_num: int = wire(UInt(0, 1023), since=6, default=0)
    momentum_den: int = wire(UInt(1, 1024), since=6, default=1)
    velocity_scale: int = wire(UInt(1, 1 << 16), since=6, default=1)
    # ... and the guarded free-rider filter (consensus.selection.drop_parent_ties): a
    # selected model scoring exactly the parent's k leaves the selection while more than
    # this many members remain (0: off)
    guard_members: int = wire(UInt(0, MAX_PARTICIPANTS), since=6, default=0)


WINNER_RULE = RuleSpec("winner", 100, 1, 1)  # what a version-1 genesis means


@dataclass(frozen=True)
class AggregationSpec(Wire):
    """Protocol v2: what every node needs to check an aggregate against commitments
    (consensus.commitment): the circuit's blinding rows and the hash of its basis."""

    TAG = 15
    NAME = "AggregationSpec"
    MAX_BYTES = 128

    unusable_rows: int = wire(UInt(0, 64))
    parameters: int = wire(UInt(0, MAX_REMAINDER))  # the model's parameter count
    basis_hash: bytes = wire(Bytes(0, HASH_LEN))  # empty: the rule aggregates nothing
    constant: bytes = wire(Bytes(0, POINT_LEN))  # K, compressed: C(q) = L(q) + K


NO_AGGREGATION = AggregationSpec(0, 0, b"", b"")


@dataclass(frozen=True)
class Genesis(Wire):
    """The chain's constitution; its content hash is the chain id."""

    TAG = 1
    NAME = "Genesis"
    MAX_BYTES = 64 * 1024

    chain_name: str = wire(_NAME)
    timing: Timing = wire(Struct(Timing))
    finality_depth: int = wire(UInt(1, 100_000))
    participants: tuple[bytes, ...] = wire(
        ListOf(_KEY, MAX_PARTICIPANTS, lo=1, strictly_sorted=True)
    )
    publisher: bytes = wire(_KEY)
    task: Task = wire(Struct(Task))
    eval_plan: EvalPlan = wire(Struct(EvalPlan))
    circuit: CircuitSpec = wire(Struct(CircuitSpec))
    initial_model_hash: bytes = wire(_HASH)
    rule: RuleSpec = wire(Struct(RuleSpec), since=2, default=WINNER_RULE)
    aggregation: AggregationSpec = wire(Struct(AggregationSpec), since=2, default=NO_AGGREGATION)
    # protocol v6: sha256 of the public test split's indices (int64 LE), so a node that
    # joins fetches them by hash and reports accuracy as a testnet's nodes do (empty: none)
    test_index_hash: bytes = wire(Bytes(0, HASH_LEN), since=6, default=b"")


@dataclass(frozen=True)
class EvalBatch(Wire):
    """One held-out batch: quantised inputs (int32 LE, row-major) and labels (uint8)."""

    TAG = 6
    NAME = "EvalBatch"
    MAX_BYTES = MAX_BATCH_INPUT_BYTES + MAX_EVAL_BATCH + 64

    index: int = wire(UInt(0, MAX_NUM_BATCHES - 1))
    inputs: bytes = wire(Bytes(1, MAX_BATCH_INPUT_BYTES))
    labels: bytes = wire(Bytes(1, MAX_EVAL_BATCH))


@dataclass(frozen=True)
class CommitTx(Signed):
    """A participant's binding to the weights it trained this round.

    `binding` = commit_binding(chain, participant, round, parent, C): the weight
    commitment C itself stays hidden until the proof tx discloses it, after the
    reveal has sealed the commits, so nobody can copy another's C under their own key.
    """

    TAG = 2
    NAME = "CommitTx"
    MAX_BYTES = 256

    round: int = wire(UInt(0, MAX_NUM_BATCHES - 1))
    parent: bytes = wire(_HASH)  # the block whose model it trained from
    participant: bytes = wire(_KEY)
    binding: bytes = wire(_HASH)
    # protocol v2: this round's Diffie-Hellman key for pairwise masks (consensus.masking)
    mask_key: bytes = wire(Bytes(0, POINT_LEN), since=2, default=b"")
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class Reveal(Signed):
    """The publisher's round batch, its Merkle proof, and the sealed commit ids."""

    TAG = 3
    NAME = "Reveal"
    MAX_BYTES = EvalBatch.MAX_BYTES + MAX_MERKLE_DEPTH * 40 + MAX_PARTICIPANTS * 40 + 256

    round: int = wire(UInt(0, MAX_NUM_BATCHES - 1))
    batch: EvalBatch = wire(Struct(EvalBatch))
    merkle_proof: tuple[bytes, ...] = wire(ListOf(_HASH, MAX_MERKLE_DEPTH))
    sealed: tuple[bytes, ...] = wire(ListOf(_HASH, MAX_PARTICIPANTS, strictly_sorted=True))
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class ProofTx(Signed):
    """A zk proof that the model committed in `commit_id` scores k on the round batch.

    Discloses the weight commitment C, which must open the commit's binding.
    """

    TAG = 4
    NAME = "ProofTx"
    MAX_BYTES = MAX_PROOF_BYTES + MAX_COMMITMENT_BYTES + 256

    round: int = wire(UInt(0, MAX_NUM_BATCHES - 1))
    commit_id: bytes = wire(_HASH)
    participant: bytes = wire(_KEY)
    commitment: bytes = wire(Bytes(1, MAX_COMMITMENT_BYTES))
    k: int = wire(UInt(0, MAX_EVAL_BATCH))
    proof: bytes = wire(Bytes(1, MAX_PROOF_BYTES))
    signature: bytes = wire(_SIG, default=UNSIGNED)


@dataclass(frozen=True)
class JoinRequest(Signed):
    """Protocol v3: a key asks to become a participant (it signs with that key, so
    nobody can be admitted without holding it); gossiped for the publisher to admit."""

    TAG = 19
    NAME = "JoinRequest"
    MAX_BYTES = 128

    key: bytes = wire(_KEY)
    signature: bytes = wire(_SIG, default=UNSIGNED)


ADMIT, EXIT, REMOVE = 1, 2, 3  # Membership.kind


@dataclass(frozen=True)
class Membership(Signed):
    """Protocol v3: a change of the participant set, carried by a block
    (consensus.membership): an admission or removal signed by the publisher, or a
    participant's own exit. It takes effect from `from_round` on; an admission
    carries the newcomer's JoinRequest signature."""

    TAG = 21
    NAME = "Membership"
    MAX_BYTES = 256

    kind: int = wire(UInt(ADMIT, REMOVE))
    key: bytes = wire(_KEY)
    from_round: int = wire(UInt(1, MAX_NUM_BATCHES - 1))
    request: bytes = wire(Bytes(0, SIG_LEN))  # ADMIT: the JoinRequest's signature; else empty
    signature: bytes = wire(_SIG, default=UNSIGNED)


MAX_MEMBERSHIP_PER_BLOCK = 16
# protocol v5: evidence of misbehaviour a block may carry (consensus.evidence)
EQUIVOCATION, FALSE_SHARE, BAD_UNMASK, BAD_MASK_KEY = 1, 2, 3, 4
BAD_UPDATE, BAD_SELF_MASK, FALSE_PAIR = 5, 6, 7  # proven by an expensive check (checks.py)
# v7: BAD_UPDATE of a vector in 4 parts quotes 7 (Selection, CommitTx, C, the update,
# its 3 later parts), up to 2.4 MB: too big to gossip, its finder's block carries it
MAX_EVIDENCE_MESSAGES = 7
MAX_EVIDENCE_PER_BLOCK = 4
MAX_EVIDENCE_MESSAGE = 643 * 1024  # the largest message evidence quotes (a MaskedUpdate)
MAX_EVIDENCE_BYTES = 3 << 20  # all the evidence of one block, encoded


@dataclass(frozen=True)
class Evidence(Wire):
    """Signed messages that prove one participant broke a rule (consensus.evidence says
    which messages each kind quotes and how it is checked)."""

    TAG = 23
    NAME = "Evidence"
    MAX_BYTES = MAX_EVIDENCE_MESSAGES * (MAX_EVIDENCE_MESSAGE + 8) + 64

    kind: int = wire(UInt(EQUIVOCATION, FALSE_PAIR))
    messages: tuple[bytes, ...] = wire(
        ListOf(Bytes(1, MAX_EVIDENCE_MESSAGE), MAX_EVIDENCE_MESSAGES, lo=1)
    )


@dataclass(frozen=True)
class Block(Signed):
    """Round r's block: the reveal, the sealed commits and proofs, the winner's model hash."""

    TAG = 5
    NAME = "Block"
    MAX_BYTES = (
        Reveal.MAX_BYTES
        + MAX_PARTICIPANTS * (CommitTx.MAX_BYTES + ProofTx.MAX_BYTES + PUBKEY_LEN + 4)
        + MAX_REMAINDER
        + MAX_MEMBERSHIP_PER_BLOCK * (Membership.MAX_BYTES + 4)
        + MAX_EVIDENCE_BYTES
        + 1024
    )

    round: int = wire(UInt(0, MAX_NUM_BATCHES - 1))
    parent: bytes = wire(_HASH)
    height: int = wire(UInt(1, 2**62))
    proposer: bytes = wire(_KEY)
    rank: int = wire(UInt(1, MAX_PARTICIPANTS))
    reveal: Reveal = wire(Struct(Reveal))
    commits: tuple[CommitTx, ...] = wire(ListOf(Struct(CommitTx), MAX_PARTICIPANTS, lo=1))
    proofs: tuple[ProofTx, ...] = wire(ListOf(Struct(ProofTx), MAX_PARTICIPANTS, lo=1))
    model_hash: bytes = wire(_HASH)
    # protocol v2, averaging rules: whose models the global model averages (empty: the
    # rule's v1 meaning, or no aggregate this round), and the remainder R of the exact
    # integer mean, one byte per parameter (consensus.aggregate)
    members: tuple[bytes, ...] = wire(
        ListOf(_KEY, MAX_PARTICIPANTS, strictly_sorted=True), since=2, default=()
    )
    remainder: bytes = wire(Bytes(0, MAX_REMAINDER), since=2, default=b"")
    # protocol v3: changes of the participant set (consensus.membership), sorted by hash
    membership: tuple[Membership, ...] = wire(
        ListOf(Struct(Membership), MAX_MEMBERSHIP_PER_BLOCK), since=3, default=()
    )
    # protocol v5: proven misbehaviour, one per offender, sorted by hash
    evidence: tuple[Evidence, ...] = wire(
        ListOf(Struct(Evidence), MAX_EVIDENCE_PER_BLOCK), since=5, default=()
    )
    # protocol v6, a server optimizer (consensus.optimizer): `model_hash` is the next
    # global model G' = step(G, V, M); these are the blobs of the aggregate M the
    # members' commitments check and of the velocity V' after the step (empty: no
    # optimizer, or, for V', still zero)
    aggregate_hash: bytes = wire(Bytes(0, HASH_LEN), since=6, default=b"")
    velocity_hash: bytes = wire(Bytes(0, HASH_LEN), since=6, default=b"")
    signature: bytes = wire(_SIG, default=UNSIGNED)


def chain_id(genesis: Genesis) -> bytes:
    """The chain id is the genesis content hash; every signature is bound to it."""
    return genesis.hash()
