"""Persistent node state: the LevelDB chain store."""

from __future__ import annotations

from storage.chainstore import (
    BlockMeta,
    ChainStore,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    UnknownBlockError,
)

__all__ = [
    "BlockMeta",
    "ChainStore",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "UnknownBlockError",
]
