"""Crash-test workload for the chain store: mutate it until the parent test kills it.

Run as ``python tests/support/storage_crash_child.py DIR SEED``. Prints ``ready`` once the store is
open, then one line per acknowledged (synced) write, so the parent can check that every write
that returned before ``kill -9`` survived it:

    B <hash>            block stored
    X <hash>            blob stored
    H <hash>            head moved by set_head
    F <hash> <height>   finalized moved
"""

from __future__ import annotations

import hashlib
import random
import sys

from storage import BlockMeta, ChainStore

GENESIS_RAW = b"zkpot storage crash-test genesis"


def _ack(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _pick(rng: random.Random, hashes: list[bytes]) -> bytes:
    """Mostly recent blocks: random old ones are usually below finality, so reorgs are refused."""
    return rng.choice(hashes[-64:] if rng.random() < 0.8 else hashes)


def run(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    store = ChainStore.open(directory)
    store.init_genesis(hashlib.sha256(GENESIS_RAW).digest(), GENESIS_RAW)
    metas = dict(store.iter_blocks())
    hashes = list(metas)
    _ack("ready")
    while True:
        op = rng.random()
        if op < 0.62:
            parent = store.head() if rng.random() < 0.4 else _pick(rng, hashes)
            pmeta = metas[parent]
            raw = parent + rng.randbytes(16) + bytes(rng.randrange(0, 2048))
            block_hash = hashlib.sha256(raw).digest()
            meta = BlockMeta(parent, pmeta.height + 1, pmeta.score + rng.randrange(0, 100))
            try:
                store.put_block(block_hash, raw, meta, new_head=rng.random() < 0.5)
            except ValueError:  # the new block's branch would revert the finalized block
                store.put_block(block_hash, raw, meta)
            metas[block_hash] = meta
            hashes.append(block_hash)
            _ack(f"B {block_hash.hex()}")
        elif op < 0.86:
            target = _pick(rng, hashes)
            try:
                store.set_head(target)
            except ValueError:  # target does not descend from the finalized block
                continue
            _ack(f"H {target.hex()}")
        elif op < 0.95:
            # Skewed towards small blobs so the store stays small enough to re-check 30 times.
            size = int(rng.random() ** 3 * 1_000_000)
            _ack(f"X {store.put_blob(rng.randbytes(size)).hex()}")
        else:
            # Lag behind the head so that most reorgs stay legal.
            fin_height = metas[store.finalized()].height
            head_height = metas[store.head()].height
            final = store.canonical_hash(rng.randint(fin_height, max(fin_height, head_height - 8)))
            assert final is not None
            store.set_finalized(final)
            _ack(f"F {final.hex()} {metas[final].height}")


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
