"""Chain store tests on real LevelDB directories: the point is what survives on disk."""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import plyvel
import pytest

from storage import (
    BlockMeta,
    ChainStore,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    UnknownBlockError,
)
from support import TESTS_DIR, child_env

ZERO = bytes(32)
GENESIS_RAW = b"zkpot test genesis"
GENESIS = hashlib.sha256(GENESIS_RAW).digest()
CRASH_CHILD = TESTS_DIR / "support" / "storage_crash_child.py"


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def make_block(parent: bytes, tag: str) -> tuple[bytes, bytes]:
    raw = parent + tag.encode()
    return sha(raw), raw


def extend(
    store: ChainStore, parent: bytes, tag: str, *, new_head: bool = True, score_step: int = 1
) -> bytes:
    pmeta = store.get_meta(parent)
    assert pmeta is not None
    block_hash, raw = make_block(parent, tag)
    meta = BlockMeta(parent, pmeta.height + 1, pmeta.score + score_step)
    store.put_block(block_hash, raw, meta, new_head=new_head)
    return block_hash


def build_branch(
    store: ChainStore, parent: bytes, name: str, count: int, *, new_head: bool = True
) -> list[bytes]:
    hashes = []
    for i in range(count):
        parent = extend(store, parent, f"{name}{i}", new_head=new_head)
        hashes.append(parent)
    return hashes


def canonical_chain(store: ChainStore) -> list[bytes]:
    head_meta = store.get_meta(store.head())
    assert head_meta is not None
    chain = [store.canonical_hash(h) for h in range(head_meta.height + 1)]
    assert all(h is not None for h in chain)
    return [h for h in chain if h is not None]


def ancestors(store: ChainStore, block_hash: bytes) -> list[bytes]:
    """Genesis-first path to `block_hash`, by parent links."""
    path = []
    cur = block_hash
    while cur != ZERO:
        path.append(cur)
        meta = store.get_meta(cur)
        assert meta is not None
        cur = meta.parent
    return path[::-1]


def dump(path: Path) -> dict[bytes, bytes]:
    """Every key/value on disk; the store must be closed."""
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator())
    finally:
        db.close()


def tamper(path: Path, key: bytes, value: bytes | None) -> None:
    db = plyvel.DB(str(path))
    try:
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    finally:
        db.close()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "chain"


@pytest.fixture
def store(store_path: Path) -> Iterator[ChainStore]:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        yield s


# ---------------------------------------------------------------- genesis and linear chain


def test_init_genesis_sets_genesis_head_finalized_and_canonical_zero(store: ChainStore) -> None:
    assert store.genesis_hash() == GENESIS
    assert store.head() == GENESIS
    assert store.finalized() == GENESIS
    assert store.canonical_hash(0) == GENESIS
    assert store.canonical_hash(1) is None
    assert store.get_block(GENESIS) == GENESIS_RAW
    assert store.get_meta(GENESIS) == BlockMeta(ZERO, 0, 0)
    assert store.check_consistency() == []


def test_fresh_store_has_no_genesis_and_no_head(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        assert s.genesis_hash() is None
        with pytest.raises(StoreError, match="init_genesis"):
            s.head()
        assert s.check_consistency() == []


def test_init_genesis_again_with_same_hash_is_noop(store: ChainStore) -> None:
    tip = build_branch(store, GENESIS, "a", 2)[-1]
    store.init_genesis(GENESIS, GENESIS_RAW)
    assert store.head() == tip
    assert store.check_consistency() == []


def test_init_genesis_with_other_genesis_is_refused(store: ChainStore) -> None:
    other_raw = b"another chain"
    with pytest.raises(StoreError, match=f"belongs to chain {GENESIS.hex()}"):
        store.init_genesis(sha(other_raw), other_raw)
    assert store.genesis_hash() == GENESIS


def test_init_genesis_rejects_hash_mismatch(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        with pytest.raises(ValueError, match="does not match"):
            s.init_genesis(sha(b"x"), GENESIS_RAW)
        assert s.genesis_hash() is None


def test_put_blocks_on_chain_sets_canonical_index_and_head(store: ChainStore) -> None:
    chain = build_branch(store, GENESIS, "a", 5)
    assert store.head() == chain[-1]
    assert canonical_chain(store) == [GENESIS, *chain]
    assert store.canonical_hash(6) is None
    meta = store.get_meta(chain[-1])
    assert meta == BlockMeta(chain[-2], 5, 5)
    assert store.has_block(chain[2])
    assert store.get_block(chain[2]) == make_block(chain[1], "a2")[1]
    assert store.check_consistency() == []


def test_put_block_without_new_head_keeps_head(store: ChainStore) -> None:
    block = extend(store, GENESIS, "side", new_head=False)
    assert store.has_block(block)
    assert store.head() == GENESIS
    assert store.canonical_hash(1) is None
    assert store.check_consistency() == []


def test_iter_blocks_lists_every_stored_block(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 3)
    b = build_branch(store, a[0], "b", 2, new_head=False)
    listed = dict(store.iter_blocks())
    assert set(listed) == {GENESIS, *a, *b}
    assert listed[b[1]] == BlockMeta(b[0], 3, 3)


# ---------------------------------------------------------------- reorgs


def test_reorg_to_longer_branch_rewrites_canonical_index_above_fork(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 5)  # heights 1..5
    b = build_branch(store, a[1], "b", 4, new_head=False)  # forks at height 2, heights 3..6
    assert canonical_chain(store) == [GENESIS, *a]
    store.set_head(b[-1])
    assert store.head() == b[-1]
    assert canonical_chain(store) == [GENESIS, a[0], a[1], *b]
    assert canonical_chain(store) == ancestors(store, b[-1])
    assert store.check_consistency() == []


def test_reorg_back_to_shorter_branch_deletes_heights_above_tip(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 5)
    b = build_branch(store, a[1], "b", 4, new_head=False)
    store.set_head(b[-1])
    assert store.check_consistency() == []
    store.set_head(a[-1])  # height 5 < 6
    assert canonical_chain(store) == [GENESIS, *a]
    assert store.canonical_hash(6) is None
    assert store.check_consistency() == []
    store.set_head(a[1])  # back to the fork point itself
    assert canonical_chain(store) == [GENESIS, a[0], a[1]]
    assert all(store.canonical_hash(h) is None for h in range(3, 8))
    assert store.check_consistency() == []


def test_put_block_with_new_head_on_side_branch_reorgs_in_one_step(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 5)
    tip = extend(store, a[1], "side", new_head=True)  # height 3
    assert store.head() == tip
    assert canonical_chain(store) == [GENESIS, a[0], a[1], tip]
    assert store.canonical_hash(4) is None
    assert store.check_consistency() == []


def test_reorg_leaves_canonical_entries_below_fork_untouched(store_path: Path) -> None:
    """Proves set_head does not rewrite the whole index: a planted marker below the fork stays."""
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        a = build_branch(s, GENESIS, "a", 40)
        b = build_branch(s, a[29], "b", 3, new_head=False)
    marker = b"\x77" * 32
    tamper(store_path, b"c" + (5).to_bytes(8, "big"), marker)
    with ChainStore.open(store_path) as s:
        s.set_head(b[-1])
        assert s.canonical_hash(5) == marker
        assert s.canonical_hash(31) == b[0]
        assert s.canonical_hash(34) is None
        assert any("canonical[5]" in p for p in s.check_consistency())


def test_reorg_that_would_revert_finalized_block_is_refused(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 5)
    b = build_branch(store, a[1], "b", 4, new_head=False)
    store.set_finalized(a[3])
    with pytest.raises(ValueError, match="finalized"):
        store.set_head(b[-1])
    with pytest.raises(ValueError, match="finalized"):
        extend(store, b[-1], "b-next", new_head=True)
    assert not store.has_block(make_block(b[-1], "b-next")[0])
    assert store.head() == a[-1]
    assert canonical_chain(store) == [GENESIS, *a]
    store.set_head(a[3])  # the finalized block itself is a valid head
    assert store.check_consistency() == []


def test_set_head_to_unknown_block_raises_unknown_block(store: ChainStore) -> None:
    with pytest.raises(UnknownBlockError):
        store.set_head(sha(b"nope"))
    assert store.head() == GENESIS


# ---------------------------------------------------------------- rejected writes


def test_put_block_with_unknown_parent_raises_and_leaves_store_unchanged(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        build_branch(s, GENESIS, "a", 2)
    before = dump(store_path)
    orphan_hash, orphan_raw = make_block(sha(b"missing parent"), "x")
    with ChainStore.open(store_path) as s, pytest.raises(UnknownBlockError, match="parent"):
        s.put_block(orphan_hash, orphan_raw, BlockMeta(sha(b"missing parent"), 3, 3), new_head=True)
    assert dump(store_path) == before


def test_put_block_with_wrong_hash_raises_value_error_and_leaves_store_unchanged(
    store_path: Path,
) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
    before = dump(store_path)
    _, raw = make_block(GENESIS, "a")
    with ChainStore.open(store_path) as s, pytest.raises(ValueError, match="does not match"):
        s.put_block(sha(b"other"), raw, BlockMeta(GENESIS, 1, 1), new_head=True)
    assert dump(store_path) == before


def test_put_block_with_wrong_height_or_lower_score_raises_value_error(store: ChainStore) -> None:
    a1 = extend(store, GENESIS, "a", score_step=10)
    block_hash, raw = make_block(a1, "b")
    with pytest.raises(ValueError, match="height"):
        store.put_block(block_hash, raw, BlockMeta(a1, 3, 10))
    with pytest.raises(ValueError, match="score"):
        store.put_block(block_hash, raw, BlockMeta(a1, 2, 9))
    assert not store.has_block(block_hash)
    assert store.check_consistency() == []


def test_malformed_arguments_raise_value_or_type_error(store: ChainStore) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        store.get_block(b"short")
    with pytest.raises(ValueError, match="32-byte"):
        BlockMeta(b"short", 1, 0)
    with pytest.raises(ValueError, match=re.escape("0..2**64-1")):
        BlockMeta(ZERO, -1, 0)
    with pytest.raises(TypeError):
        BlockMeta(ZERO, True, 0)
    with pytest.raises(ValueError, match=re.escape("0..2**64-1")):
        store.canonical_hash(-1)


def test_reput_identical_block_is_noop_but_can_move_head(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 3)
    block_hash, raw = make_block(GENESIS, "a0")
    store.put_block(block_hash, raw, BlockMeta(GENESIS, 1, 1))
    assert store.head() == a[-1]
    store.put_block(block_hash, raw, BlockMeta(GENESIS, 1, 1), new_head=True)
    assert store.head() == a[0]
    assert canonical_chain(store) == [GENESIS, a[0]]
    assert store.check_consistency() == []


def test_reput_with_different_meta_is_refused(store: ChainStore) -> None:
    a1 = extend(store, GENESIS, "a0")
    _, raw = make_block(GENESIS, "a0")
    with pytest.raises(ValueError, match="already stored"):
        store.put_block(a1, raw, BlockMeta(GENESIS, 1, 7))
    assert store.get_meta(a1) == BlockMeta(GENESIS, 1, 1)


# ---------------------------------------------------------------- finality


def test_set_finalized_moves_forward_along_canonical_chain_only(store: ChainStore) -> None:
    a = build_branch(store, GENESIS, "a", 4)
    side = extend(store, a[0], "side", new_head=False)
    with pytest.raises(ValueError, match="not on the canonical chain"):
        store.set_finalized(side)
    store.set_finalized(a[2])
    assert store.finalized() == a[2]
    with pytest.raises(ValueError, match="never moves back"):
        store.set_finalized(a[1])
    with pytest.raises(UnknownBlockError):
        store.set_finalized(sha(b"nope"))
    store.set_finalized(a[3])
    assert store.finalized() == a[3]
    assert store.check_consistency() == []


# ---------------------------------------------------------------- blobs


def test_blob_round_trip_is_content_addressed_and_idempotent(store: ChainStore) -> None:
    data = os.urandom(100_000)
    blob_hash = store.put_blob(data)
    assert blob_hash == sha(data)
    assert store.put_blob(data) == blob_hash
    assert store.has_blob(blob_hash)
    assert store.get_blob(blob_hash) == data
    assert store.put_blob(b"") == sha(b"")
    assert store.get_blob(sha(b"")) == b""
    assert not store.has_blob(sha(b"absent"))
    assert store.get_blob(sha(b"absent")) is None
    assert store.check_consistency() == []


def test_tampered_blob_raises_corrupt_on_read_and_is_reported(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        blob_hash = s.put_blob(b"model weights")
    tamper(store_path, b"x" + blob_hash, b"poisoned weights")
    with ChainStore.open(store_path) as s:
        assert s.has_blob(blob_hash)
        with pytest.raises(StoreCorruptError, match=blob_hash.hex()):
            s.get_blob(blob_hash)
        problems = s.check_consistency()
        assert len(problems) == 1
        assert blob_hash.hex() in problems[0]


def test_tampered_block_raises_corrupt_on_read_and_is_reported(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        a = build_branch(s, GENESIS, "a", 2)
    tamper(store_path, b"b" + a[0], b"evil block")
    with ChainStore.open(store_path) as s:
        with pytest.raises(StoreCorruptError, match=a[0].hex()):
            s.get_block(a[0])
        assert any(a[0].hex() in p for p in s.check_consistency())


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xc1",
        b"not msgpack at all",
        msgpack.packb([ZERO, 1]),
        msgpack.packb([ZERO, 1, -1]),
        msgpack.packb([b"short", 1, 1]),
        msgpack.packb([ZERO, 1.0, 1]),
        msgpack.packb({"parent": ZERO}),
    ],
)
def test_garbage_meta_raises_corrupt_and_is_reported(store_path: Path, garbage: bytes) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        a1 = extend(s, GENESIS, "a0", new_head=False)
    tamper(store_path, b"m" + a1, garbage)
    with ChainStore.open(store_path) as s:
        with pytest.raises(StoreCorruptError, match=a1.hex()):
            s.get_meta(a1)
        with pytest.raises(StoreCorruptError):
            list(s.iter_blocks())
        assert any(a1.hex() in p for p in s.check_consistency())


def test_check_consistency_reports_missing_ancestor_and_stray_canonical_entry(
    store_path: Path,
) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        a = build_branch(s, GENESIS, "a", 3)
    tamper(store_path, b"m" + a[0], None)
    tamper(store_path, b"c" + (9).to_bytes(8, "big"), a[2])
    with ChainStore.open(store_path) as s:
        text = "\n".join(s.check_consistency())
    assert "missing" in text
    assert "height 9 is above the head" in text


# ---------------------------------------------------------------- opening, locking, reopening


def test_reopen_after_close_keeps_everything(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
        a = build_branch(s, GENESIS, "a", 5)
        b = build_branch(s, a[1], "b", 4, new_head=False)
        s.set_head(b[-1])
        s.set_finalized(b[0])
        blob_hash = s.put_blob(b"artifact")
        before = (canonical_chain(s), dict(s.iter_blocks()))
    with ChainStore.open(store_path, create=False) as s:
        assert s.genesis_hash() == GENESIS
        assert s.head() == b[-1]
        assert s.finalized() == b[0]
        assert s.get_blob(blob_hash) == b"artifact"
        assert (canonical_chain(s), dict(s.iter_blocks())) == before
        assert s.check_consistency() == []


@pytest.mark.slow  # a second process holds the store
def test_store_held_by_another_process_raises_locked_naming_directory(store_path: Path) -> None:
    holder = (
        "import sys\n"
        "from storage import ChainStore\n"
        "s = ChainStore.open(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "s.close()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match="another process") as info:
            ChainStore.open(store_path)
        assert str(store_path) in str(info.value)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    with ChainStore.open(store_path) as s:  # released once the holder exits
        assert s.check_consistency() == []


def test_opening_twice_in_one_process_raises_locked(store: ChainStore, store_path: Path) -> None:
    with pytest.raises(StoreLockedError, match=re.escape(str(store_path))):
        ChainStore.open(store_path)
    assert store.head() == GENESIS  # the first handle is unaffected


def test_open_missing_directory_without_create_raises_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(StoreError, match=re.escape(str(missing))):
        ChainStore.open(missing, create=False)
    assert not missing.exists()


def test_unknown_schema_version_is_refused(store_path: Path) -> None:
    with ChainStore.open(store_path) as s:
        s.init_genesis(GENESIS, GENESIS_RAW)
    tamper(store_path, b"V", msgpack.packb(2))
    with pytest.raises(StoreError, match="schema version 2"):
        ChainStore.open(store_path)


def test_foreign_leveldb_without_schema_version_is_refused(store_path: Path) -> None:
    db = plyvel.DB(str(store_path), create_if_missing=True)
    db.put(b"foo", b"bar")
    db.close()
    with pytest.raises(StoreCorruptError, match="no schema version"):
        ChainStore.open(store_path)


def test_close_is_idempotent_and_use_after_close_raises(store_path: Path) -> None:
    s = ChainStore.open(store_path)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.genesis_hash()


# ---------------------------------------------------------------- crash safety


def _run_child_and_kill(path: Path, seed: int, delay_s: float) -> list[str]:
    """Start the workload, SIGKILL it `delay_s` after it is ready; return its acknowledgements."""
    proc = subprocess.Popen(
        [sys.executable, str(CRASH_CHILD), str(path), str(seed)],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == "ready", f"crash child did not start: {first!r}"
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # A line cut off by the kill is not an acknowledgement.
    return [line for line in rest.split("\n")[:-1] if line]


@pytest.mark.slow
def test_store_survives_repeated_kill_9_consistent_with_all_acked_writes(tmp_path: Path) -> None:
    path = tmp_path / "crash"
    rng = random.Random(20240611)
    acked_blocks: set[bytes] = set()
    acked_blobs: set[bytes] = set()
    acked_final_height = 0
    acked_reorgs = 0
    for iteration in range(30):
        acks = _run_child_and_kill(path, rng.randrange(2**32), rng.uniform(0.05, 0.4))
        for ack in acks:
            kind, *fields = ack.split()
            if kind == "B":
                acked_blocks.add(bytes.fromhex(fields[0]))
            elif kind == "X":
                acked_blobs.add(bytes.fromhex(fields[0]))
            elif kind == "H":
                acked_reorgs += 1
            elif kind == "F":
                acked_final_height = max(acked_final_height, int(fields[1]))
        with ChainStore.open(path, create=False) as s:
            assert s.check_consistency() == [], f"after crash {iteration}"
            head = s.head()
            assert s.get_block(head) is not None
            final_meta = s.get_meta(s.finalized())
            assert final_meta is not None
            assert final_meta.height >= acked_final_height
            missing = [h.hex() for h in acked_blocks if not s.has_block(h)]
            assert missing == [], f"acknowledged blocks lost after crash {iteration}"
            assert all(s.has_blob(h) for h in acked_blobs)
    # The workload really ran between kills, reorgs included.
    assert len(acked_blocks) > 30
    assert acked_reorgs > 0
    shutil.rmtree(path)  # hundreds of MB of blobs; pytest keeps recent tmp dirs around
