"""Crash-safe chain store on LevelDB.

The store works on bytes: a block is its encoded bytes, identified by ``sha256(raw)``, and the
caller passes the parent hash, height and cumulative score next to it. This keeps the store
independent of the block format, so a wire-format change never needs a storage migration.

Key layout (a single-byte prefix per kind, so each kind is one contiguous key range)::

    b"V"                        schema version: msgpack uint, currently 1
    b"G"                        genesis block hash (32 bytes)
    b"H"                        head block hash
    b"F"                        finalized block hash
    b"b" + hash                 raw block bytes; sha256(value) == hash
    b"m" + hash                 meta: msgpack array [parent: bin 32, height: uint, score: uint]
    b"c" + height (8 bytes BE)  hash of the canonical block at that height, for 0..head.height only
    b"x" + hash                 blob bytes (models, circuit artifacts); sha256(value) == hash

Crash safety: every change that touches more than one key goes out as one LevelDB write batch
with ``sync=True``. LevelDB applies a batch all-or-nothing on recovery, so after a crash (or
``kill -9``) the store is at a batch boundary and every invariant below still holds:

* every stored block has its meta, and every meta's parent is stored (back to genesis);
* ``canonical[h]`` is the head's ancestor at height ``h`` for ``h`` in ``0..head.height``, and
  there are no canonical entries above the head;
* the finalized block is canonical, and the head never moves to a branch that drops it.

Content hashes are re-checked on every read, so disk corruption surfaces as
`StoreCorruptError` rather than as wrong data handed to consensus.

(Over 300 lines on purpose: one class owns every key of the store, so each invariant
above is kept, and checked by `check_consistency`, in one place.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import msgpack
import plyvel

from consensus.crypto import HASH_LEN, ZERO_HASH, sha256

SCHEMA_VERSION = 1
# msgpack integers are at most 64 bits; heights also have to fit the 8-byte canonical key.
MAX_UINT64 = 2**64 - 1

_VERSION_KEY = b"V"
_GENESIS_KEY = b"G"
_HEAD_KEY = b"H"
_FINALIZED_KEY = b"F"
_BLOCK = b"b"
_META = b"m"
_CANON = b"c"
_BLOB = b"x"
# Exclusive upper bound of the canonical key range (the byte after b"c").
_CANON_END = b"d"

# A planned write: (key, value) puts, (key, None) deletes.
_Op = tuple[bytes, bytes | None]


class StoreError(Exception):
    """Base class; the message says what is wrong and what the operator can do."""


class StoreLockedError(StoreError):
    """Another process holds the directory: two nodes on one store would corrupt it."""


class StoreCorruptError(StoreError):
    """On-disk data failed a check; the store cannot be trusted without repair or resync."""


class UnknownBlockError(StoreError):
    """A referenced block is absent, so the caller must fetch it (or its ancestors) first."""


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


def _check_hash(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_LEN:
        raise ValueError(f"{name} must be a {HASH_LEN}-byte sha256 hash, got {len(value)} bytes")


def _check_uint(name: str, value: object) -> None:
    # bool is an int subclass; a True height is a caller bug, not 1.
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_UINT64:
        raise ValueError(f"{name} must be in 0..2**64-1, got {value}")


@dataclass(frozen=True)
class BlockMeta:
    """What fork choice needs about a block, without decoding the block itself."""

    parent: bytes  # 32 bytes; ZERO_HASH for the genesis entry
    height: int  # genesis is 0
    score: int  # cumulative proven score

    def __post_init__(self) -> None:
        _check_hash("parent", self.parent)
        _check_uint("height", self.height)
        _check_uint("score", self.score)


def _encode_meta(meta: BlockMeta) -> bytes:
    packed: bytes = msgpack.packb([meta.parent, meta.height, meta.score], use_bin_type=True)
    return packed


def _decode_meta(block_hash: bytes, data: bytes) -> BlockMeta:
    """Strict decode: anything but the exact canonical encoding is corruption."""
    where = f"meta of block {block_hash.hex()}"
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # on-disk bytes are untrusted; any decoder failure is corruption
        raise StoreCorruptError(f"{where} is not valid msgpack ({exc}); resync the store") from exc
    if not isinstance(obj, list) or len(obj) != 3:
        raise StoreCorruptError(f"{where} is not a 3-element array; resync the store")
    parent, height, score = obj
    if not isinstance(parent, bytes) or type(height) is not int or type(score) is not int:
        raise StoreCorruptError(f"{where} has fields of the wrong type; resync the store")
    try:
        meta = BlockMeta(parent=parent, height=height, score=score)
    except (TypeError, ValueError) as exc:
        raise StoreCorruptError(f"{where} is invalid ({exc}); resync the store") from exc
    if _encode_meta(meta) != data:
        raise StoreCorruptError(f"{where} is not canonically encoded; resync the store")
    return meta


def _canon_key(height: int) -> bytes:
    return _CANON + height.to_bytes(8, "big")


def _plyvel_message(exc: BaseException) -> str:
    """plyvel puts LevelDB's status text in args[0] as bytes; make it readable."""
    if exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", errors="replace")
    return str(exc)


class ChainStore:
    """Blocks, metas, canonical index, head/finalized pointers and blobs in one LevelDB.

    Use `ChainStore.open`. Mutations are serialized by a lock so callers may hand blocking
    writes to worker threads; LevelDB itself allows one process per directory.
    """

    def __init__(self, db: Any, path: str) -> None:
        self._db: Any = db
        self._path = path
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> ChainStore:
        where = os.path.abspath(os.fspath(path))
        # LevelDB creates the directory (with LOCK and LOG files) even when create_if_missing is
        # false, and only then fails; check first so create=False leaves no trace.
        if not create and not os.path.isfile(os.path.join(where, "CURRENT")):
            raise StoreError(
                f"cannot open chain store {where}: no LevelDB store there (create=False); "
                "initialise the node home first or check --home"
            )
        try:
            db = plyvel.DB(where, create_if_missing=create)
        except plyvel.Error as exc:
            msg = _plyvel_message(exc)
            if isinstance(exc, plyvel.IOError) and "lock" in msg.lower():
                raise StoreLockedError(
                    f"chain store {where} is in use by another process (LevelDB lock held: "
                    f"{msg}); stop the other node or use another --home"
                ) from exc
            if isinstance(exc, plyvel.CorruptionError):
                raise StoreCorruptError(
                    f"chain store {where} is corrupt ({msg}); restore it from a backup or "
                    "remove it and resync"
                ) from exc
            hint = "" if create else " (create=False: initialise the node home first)"
            raise StoreError(f"cannot open chain store {where}: {msg}{hint}") from exc
        store = cls(db, where)
        try:
            store._check_schema()
        except BaseException:
            store.close()
            raise
        return store

    def _check_schema(self) -> None:
        db = self._live()
        raw: bytes | None = db.get(_VERSION_KEY)
        if raw is None:
            with db.iterator(include_value=False) as it:
                empty = next(it, None) is None
            if not empty:
                raise StoreCorruptError(
                    f"chain store {self._path} has data but no schema version; it was not "
                    "written by zkpot or is damaged; use another --home"
                )
            self._write([(_VERSION_KEY, msgpack.packb(SCHEMA_VERSION))])
            return
        try:
            version = msgpack.unpackb(raw)
        except Exception as exc:  # untrusted on-disk bytes
            raise StoreCorruptError(
                f"chain store {self._path} has an unreadable schema version {raw.hex()}"
            ) from exc
        if type(version) is not int:
            raise StoreCorruptError(
                f"chain store {self._path} has a malformed schema version {version!r}"
            )
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"chain store {self._path} uses schema version {version}, but this zkpot "
                f"understands only version {SCHEMA_VERSION}; run a matching zkpot release "
                "or use another --home"
            )

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._db is None else "open"
        return f"ChainStore({self._path!r}, {state})"

    @property
    def path(self) -> str:
        return self._path

    # ------------------------------------------------------------------ low level

    def _live(self) -> Any:
        db = self._db
        if db is None:
            raise StoreError(f"chain store {self._path} is closed; open it again")
        return db

    def _write(self, ops: list[_Op]) -> None:
        """The only write path: one synced batch, so a crash leaves all of it or none."""
        db = self._live()
        try:
            batch = db.write_batch(sync=True)
            for key, value in ops:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            batch.write()
        except plyvel.Error as exc:
            raise StoreError(
                f"write to chain store {self._path} failed: {_plyvel_message(exc)}; "
                "check free disk space and permissions"
            ) from exc

    def _has_key(self, key: bytes) -> bool:
        """Existence without reading the value, which may be a blob of hundreds of MB."""
        with self._live().iterator(start=key, include_value=False) as it:
            found: bytes | None = next(it, None)
        return found == key

    def _get_pointer(self, key: bytes, name: str) -> bytes | None:
        value: bytes | None = self._live().get(key)
        if value is not None and len(value) != HASH_LEN:
            raise StoreCorruptError(
                f"{name} pointer in chain store {self._path} is {len(value)} bytes, not "
                f"{HASH_LEN}; resync the store"
            )
        return value

    def _require_meta(self, block_hash: bytes) -> BlockMeta:
        """For blocks the invariants say must exist; absence means a damaged store."""
        meta = self.get_meta(block_hash)
        if meta is None:
            raise StoreCorruptError(
                f"block {block_hash.hex()} is referenced but missing from chain store "
                f"{self._path}; run a consistency check and resync"
            )
        return meta

    # ------------------------------------------------------------------ genesis

    def init_genesis(self, genesis_hash: bytes, genesis_raw: bytes) -> None:
        _check_hash("genesis_hash", genesis_hash)
        _check_bytes("genesis_raw", genesis_raw)
        actual = sha256(genesis_raw)
        if actual != genesis_hash:
            raise ValueError(
                f"genesis hash {genesis_hash.hex()} does not match sha256 of the genesis "
                f"bytes ({actual.hex()})"
            )
        with self._lock:
            existing = self.genesis_hash()
            if existing is not None:
                if existing == genesis_hash:
                    return
                raise StoreError(
                    f"store at {self._path} belongs to chain {existing.hex()}, not "
                    f"{genesis_hash.hex()}; use another --home for this chain"
                )
            if self._has_key(_HEAD_KEY) or self._has_key(_FINALIZED_KEY):
                raise StoreCorruptError(
                    f"chain store {self._path} has head/finalized pointers but no genesis; "
                    "it is damaged; use another --home"
                )
            meta = BlockMeta(parent=ZERO_HASH, height=0, score=0)
            self._write(
                [
                    (_BLOCK + genesis_hash, genesis_raw),
                    (_META + genesis_hash, _encode_meta(meta)),
                    (_canon_key(0), genesis_hash),
                    (_HEAD_KEY, genesis_hash),
                    (_FINALIZED_KEY, genesis_hash),
                    (_GENESIS_KEY, genesis_hash),
                ]
            )

    def genesis_hash(self) -> bytes | None:
        return self._get_pointer(_GENESIS_KEY, "genesis")

    # ------------------------------------------------------------------ blocks

    def put_block(
        self, block_hash: bytes, raw: bytes, meta: BlockMeta, *, new_head: bool = False
    ) -> None:
        _check_hash("block_hash", block_hash)
        _check_bytes("raw", raw)
        if not isinstance(meta, BlockMeta):
            raise TypeError(f"meta must be a BlockMeta, got {type(meta).__name__}")
        actual = sha256(raw)
        if actual != block_hash:
            raise ValueError(
                f"block hash {block_hash.hex()} does not match sha256 of its {len(raw)} bytes "
                f"({actual.hex()})"
            )
        with self._lock:
            ops: list[_Op] = []
            existing = self.get_meta(block_hash)
            if existing is not None:
                if existing != meta:
                    raise ValueError(
                        f"block {block_hash.hex()} is already stored with {existing}, "
                        f"not {meta}; the caller derived its meta inconsistently"
                    )
                if not self._has_key(_BLOCK + block_hash):
                    ops.append((_BLOCK + block_hash, raw))  # heal a lost body
            else:
                parent = self.get_meta(meta.parent)
                if parent is None:
                    raise UnknownBlockError(
                        f"parent {meta.parent.hex()} of block {block_hash.hex()} is not in the "
                        "store; store (or fetch) the parent first"
                    )
                if meta.height != parent.height + 1:
                    raise ValueError(
                        f"block {block_hash.hex()} has height {meta.height}, but its parent is "
                        f"at height {parent.height}; expected {parent.height + 1}"
                    )
                if meta.score < parent.score:
                    raise ValueError(
                        f"block {block_hash.hex()} has cumulative score {meta.score}, below its "
                        f"parent's {parent.score}; cumulative scores never decrease"
                    )
                ops.append((_BLOCK + block_hash, raw))
                ops.append((_META + block_hash, _encode_meta(meta)))
            if new_head:
                ops.extend(self._head_ops(block_hash, meta))
            if ops:
                self._write(ops)

    def has_block(self, block_hash: bytes) -> bool:
        _check_hash("block_hash", block_hash)
        return self._live().get(_META + block_hash) is not None  # metas are tiny: get is cheapest

    def get_block(self, block_hash: bytes) -> bytes | None:
        _check_hash("block_hash", block_hash)
        raw: bytes | None = self._live().get(_BLOCK + block_hash)
        if raw is not None and sha256(raw) != block_hash:
            raise StoreCorruptError(
                f"block {block_hash.hex()} in chain store {self._path} is corrupt (its bytes "
                f"hash to {sha256(raw).hex()}); restore from a backup or resync"
            )
        return raw

    def get_meta(self, block_hash: bytes) -> BlockMeta | None:
        _check_hash("block_hash", block_hash)
        data: bytes | None = self._live().get(_META + block_hash)
        return None if data is None else _decode_meta(block_hash, data)

    def iter_blocks(self) -> Iterator[tuple[bytes, BlockMeta]]:
        """Every stored block's meta, so a restarting node can rebuild fork choice."""
        with self._live().iterator(prefix=_META) as it:
            for key, value in it:
                block_hash = key[len(_META) :]
                if len(block_hash) != HASH_LEN:
                    raise StoreCorruptError(
                        f"chain store {self._path} has a meta key with a malformed hash "
                        f"{key.hex()}; resync the store"
                    )
                yield block_hash, _decode_meta(block_hash, value)

    # ------------------------------------------------------------------ head, canonical index

    def _head_ops(self, target: bytes, target_meta: BlockMeta) -> list[_Op]:
        """Plan a reorg to `target`: touch only heights above the common ancestor.

        `target` need not be stored yet (put_block plans the head move in the same batch).
        """
        fin = self.finalized()
        fin_meta = self._require_meta(fin)
        ops: list[_Op] = []
        cur, meta = target, target_meta
        while self.canonical_hash(meta.height) != cur:
            ops.append((_canon_key(meta.height), cur))
            if meta.height == 0:
                raise StoreCorruptError(
                    f"block {target.hex()} descends from a non-canonical genesis "
                    f"{cur.hex()}; chain store {self._path} is damaged"
                )
            cur = meta.parent
            meta = self._require_meta(cur)
        # `cur` is the common ancestor; everything at or below it stays canonical.
        if fin_meta.height > meta.height:
            raise ValueError(
                f"cannot move head to {target.hex()}: it does not descend from finalized "
                f"block {fin.hex()} at height {fin_meta.height}; finalized blocks never revert"
            )
        if target_meta.height < MAX_UINT64:
            start = _canon_key(target_meta.height + 1)
            with self._live().iterator(start=start, stop=_CANON_END, include_value=False) as it:
                ops.extend((key, None) for key in it)
        ops.append((_HEAD_KEY, target))
        return ops

    def set_head(self, block_hash: bytes) -> None:
        _check_hash("block_hash", block_hash)
        with self._lock:
            meta = self.get_meta(block_hash)
            if meta is None:
                raise UnknownBlockError(
                    f"cannot set head to {block_hash.hex()}: block not in the store; store it first"
                )
            self._write(self._head_ops(block_hash, meta))

    def head(self) -> bytes:
        value = self._get_pointer(_HEAD_KEY, "head")
        if value is None:
            raise StoreError(f"chain store {self._path} has no genesis yet; call init_genesis")
        return value

    def canonical_hash(self, height: int) -> bytes | None:
        _check_uint("height", height)
        return self._get_pointer(_canon_key(height), f"canonical[{height}]")

    def set_finalized(self, block_hash: bytes) -> None:
        """Finality only moves forward along the canonical chain."""
        _check_hash("block_hash", block_hash)
        with self._lock:
            meta = self.get_meta(block_hash)
            if meta is None:
                raise UnknownBlockError(
                    f"cannot finalize {block_hash.hex()}: block not in the store"
                )
            if self.canonical_hash(meta.height) != block_hash:
                raise ValueError(
                    f"cannot finalize {block_hash.hex()}: it is not on the canonical chain "
                    "(move the head onto its branch first)"
                )
            current = self._require_meta(self.finalized())
            if meta.height < current.height:
                raise ValueError(
                    f"cannot finalize {block_hash.hex()} at height {meta.height}: finality is "
                    f"already at height {current.height} and never moves back"
                )
            self._write([(_FINALIZED_KEY, block_hash)])

    def finalized(self) -> bytes:
        value = self._get_pointer(_FINALIZED_KEY, "finalized")
        if value is None:
            raise StoreError(f"chain store {self._path} has no genesis yet; call init_genesis")
        return value

    # ------------------------------------------------------------------ blobs

    def put_blob(self, data: bytes) -> bytes:
        # Blobs (models, circuit artifacts) can reach hundreds of MB; one LevelDB value each is
        # acceptable for now, but such values pass through LevelDB's log and memtable and are
        # rewritten on compaction. Moving large blobs to files keyed by hash is the likely fix.
        _check_bytes("data", data)
        blob_hash = sha256(data)
        with self._lock:
            if not self._has_key(_BLOB + blob_hash):
                self._write([(_BLOB + blob_hash, data)])
        return blob_hash

    def get_blob(self, blob_hash: bytes) -> bytes | None:
        _check_hash("blob_hash", blob_hash)
        data: bytes | None = self._live().get(_BLOB + blob_hash)
        if data is not None and sha256(data) != blob_hash:
            raise StoreCorruptError(
                f"blob {blob_hash.hex()} in chain store {self._path} is corrupt (its bytes "
                f"hash to {sha256(data).hex()}); delete it and fetch it again"
            )
        return data

    def has_blob(self, blob_hash: bytes) -> bool:
        _check_hash("blob_hash", blob_hash)
        return self._has_key(_BLOB + blob_hash)

    # ------------------------------------------------------------------ checking

    def check_consistency(self) -> list[str]:
        """Full scan against the invariants; reads every value, so it is O(store size)."""
        db = self._live()
        problems: list[str] = []

        metas: dict[bytes, BlockMeta] = {}
        with db.iterator(prefix=_META) as it:
            for key, value in it:
                block_hash = key[len(_META) :]
                if len(block_hash) != HASH_LEN:
                    problems.append(f"meta key {key.hex()} has a malformed hash")
                    continue
                try:
                    metas[block_hash] = _decode_meta(block_hash, value)
                except StoreCorruptError as exc:
                    problems.append(str(exc))

        bodies: set[bytes] = set()
        with db.iterator(prefix=_BLOCK) as it:
            for key, value in it:
                block_hash = key[len(_BLOCK) :]
                bodies.add(block_hash)
                if sha256(value) != block_hash:
                    problems.append(
                        f"block {block_hash.hex()}: stored bytes hash to {sha256(value).hex()}"
                    )
                if block_hash not in metas:
                    problems.append(f"block {block_hash.hex()} has bytes but no (valid) meta")

        pointers: dict[str, bytes | None] = {}
        for name, key in (
            ("genesis", _GENESIS_KEY),
            ("head", _HEAD_KEY),
            ("finalized", _FINALIZED_KEY),
        ):
            try:
                pointers[name] = self._get_pointer(key, name)
            except StoreCorruptError as exc:
                problems.append(str(exc))
                pointers[name] = None
        genesis, head, fin = pointers["genesis"], pointers["head"], pointers["finalized"]

        for block_hash, meta in metas.items():
            tag = f"block {block_hash.hex()} (height {meta.height})"
            if block_hash not in bodies:
                problems.append(f"{tag} has a meta but no bytes")
            if meta.height == 0:
                if meta.parent != ZERO_HASH or block_hash != genesis:
                    problems.append(f"{tag} is at height 0 but is not the genesis entry")
                continue
            parent = metas.get(meta.parent)
            if parent is None:
                problems.append(f"{tag} has parent {meta.parent.hex()} missing from the store")
            elif parent.height + 1 != meta.height:
                problems.append(f"{tag} has a parent at height {parent.height}")
            elif meta.score < parent.score:
                problems.append(f"{tag} has a lower cumulative score than its parent")

        canon: dict[int, bytes] = {}
        with db.iterator(prefix=_CANON) as it:
            for key, value in it:
                if len(key) != 1 + 8 or len(value) != HASH_LEN:
                    problems.append(f"malformed canonical entry {key.hex()} -> {value.hex()}")
                    continue
                canon[int.from_bytes(key[1:], "big")] = value

        if genesis is None:
            if head is not None or fin is not None or metas or canon:
                problems.append("the store holds chain data but no genesis pointer")
        else:
            problems.extend(self._check_chain(genesis, head, fin, metas, canon))

        with db.iterator(prefix=_BLOB) as it:
            for key, value in it:
                blob_hash = key[len(_BLOB) :]
                if sha256(value) != blob_hash:
                    problems.append(
                        f"blob {blob_hash.hex()}: stored bytes hash to {sha256(value).hex()}"
                    )
        return problems

    @staticmethod
    def _check_chain(
        genesis: bytes,
        head: bytes | None,
        fin: bytes | None,
        metas: dict[bytes, BlockMeta],
        canon: dict[int, bytes],
    ) -> list[str]:
        problems: list[str] = []
        if genesis not in metas:
            problems.append(f"genesis {genesis.hex()} is not stored")
        if head is None:
            problems.append("there is a genesis but no head pointer")
            return problems
        head_meta = metas.get(head)
        if head_meta is None:
            problems.append(f"head {head.hex()} is not stored")
            return problems

        ancestors: dict[int, bytes] = {}
        cur, meta = head, head_meta
        while True:
            ancestors[meta.height] = cur
            if meta.height == 0:
                if cur != genesis:
                    problems.append(f"head's chain ends at {cur.hex()}, not at genesis")
                break
            parent = metas.get(meta.parent)
            if parent is None:
                problems.append(
                    f"head's ancestor {meta.parent.hex()} at height {meta.height - 1} is missing"
                )
                break
            if parent.height != meta.height - 1:
                problems.append(f"head's ancestor {meta.parent.hex()} has the wrong height")
                break
            cur, meta = meta.parent, parent

        for height in range(head_meta.height + 1):
            entry = canon.get(height)
            if entry is None:
                problems.append(f"canonical entry at height {height} is missing")
            elif height in ancestors and ancestors[height] != entry:
                problems.append(
                    f"canonical[{height}] is {entry.hex()}, but head's ancestor there is "
                    f"{ancestors[height].hex()}"
                )
        problems.extend(
            f"canonical entry at height {height} is above the head (height {head_meta.height})"
            for height in sorted(canon)
            if height > head_meta.height
        )

        if fin is None:
            problems.append("there is a genesis but no finalized pointer")
        elif fin not in metas:
            problems.append(f"finalized block {fin.hex()} is not stored")
        elif canon.get(metas[fin].height) != fin:
            problems.append(f"finalized block {fin.hex()} is not canonical")
        return problems
