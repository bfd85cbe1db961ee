"""Point routing: a port of crates/collection/src/routing.rs (`shard_of`), checked against
its pinned values, so tests can tell which shard an integer point id lands in."""

from __future__ import annotations

import struct

_M64 = (1 << 64) - 1


def _fnv1a_fmix(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x00000100000001B3) & _M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    return h ^ (h >> 33)


def _jump_hash(key: int, buckets: int) -> int:
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _M64
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(pid: int, shard_number: int) -> int:
    assert isinstance(pid, int), "these tests use integer ids only"
    return _jump_hash(_fnv1a_fmix(struct.pack("<Q", pid)), max(1, shard_number))


assert [shard_of(i, 6) for i in range(8)] == [5, 2, 3, 1, 0, 1, 3, 2], "routing port out of date"
assert shard_of(42, 1) == 0
