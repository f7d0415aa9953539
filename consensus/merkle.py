"""Merkle tree over the held-out evaluation batches.

Layout (so another implementation reproduces the root exactly):
- leaf node i  = sha256(0x00 || sha256(encode(EvalBatch i)))
- inner node   = sha256(0x01 || left || right)
- the leaf level is padded to the next power of two with 32 zero bytes as the
  node value; a tree of one leaf has depth 0 and its root is that leaf node.
- a proof for index i lists the sibling node at each level from the leaves up;
  at level l, bit l of i says whether the running node is the right child (1).
Distinct prefixes for leaves and inner nodes stop a leaf posing as a subtree.
"""

from __future__ import annotations

from consensus.crypto import ZERO_HASH, sha256

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def depth_for(num_leaves: int) -> int:
    if num_leaves < 1:
        raise ValueError("a Merkle tree needs at least one leaf")
    return (num_leaves - 1).bit_length()


def leaf_node(leaf_hash: bytes) -> bytes:
    return sha256(LEAF_PREFIX + leaf_hash)


def inner_node(left: bytes, right: bytes) -> bytes:
    return sha256(NODE_PREFIX + left + right)


def _levels(leaf_hashes: list[bytes]) -> list[list[bytes]]:
    depth = depth_for(len(leaf_hashes))
    level = [leaf_node(h) for h in leaf_hashes]
    level += [ZERO_HASH] * ((1 << depth) - len(level))
    levels = [level]
    while len(level) > 1:
        level = [inner_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(leaf_hashes: list[bytes]) -> bytes:
    return _levels(leaf_hashes)[-1][0]


def merkle_proof(leaf_hashes: list[bytes], index: int) -> list[bytes]:
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} out of range for {len(leaf_hashes)} leaves")
    proof = []
    for level in _levels(leaf_hashes)[:-1]:
        proof.append(level[index ^ 1])
        index >>= 1
    return proof


def verify_merkle_proof(
    root: bytes,
    num_leaves: int,
    index: int,
    leaf_hash: bytes,
    proof: tuple[bytes, ...] | list[bytes],
) -> bool:
    """The proof must have exactly the tree's depth: no shorter or longer path is accepted."""
    if not 0 <= index < num_leaves or len(proof) != depth_for(num_leaves):
        return False
    node = leaf_node(leaf_hash)
    for sibling in proof:
        node = inner_node(sibling, node) if index & 1 else inner_node(node, sibling)
        index >>= 1
    return node == root
