"""Seeded random streams that do not depend on process, hash seed or scheduling order.

Every (source, shard, date) gets its own stream derived from the run seed and stable
keys, so sources can be generated in parallel and still give byte-identical files.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["BASE62_TABLE", "IdFactory", "derive_rng", "stable_int"]


def stable_int(key: object) -> int:
    """A 32-bit integer for any key, identical across processes (unlike `hash`)."""
    digest = hashlib.blake2b(str(key).encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def derive_rng(seed: int, *keys: object) -> np.random.Generator:
    """An independent generator for `seed` and the given keys (order matters)."""
    entropy = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *(stable_int(k) for k in keys)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


_BASE62 = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BASE62_TABLE = bytes(_BASE62[i % 62] for i in range(256))
_HEX_TABLE = bytes(b"0123456789abcdef"[i % 16] for i in range(256))
_DIGIT_TABLE = bytes(b"0123456789"[i % 10] for i in range(256))


class IdFactory:
    """Vendor-shaped random identifiers (UUIDs, Zeek uids, Okta ids) from a seeded stream.

    Draws random bytes in blocks: one numpy call per few thousand ids, not per id.
    """

    def __init__(self, rng: np.random.Generator, block: int = 1 << 16) -> None:
        self._rng = rng
        self._block = block
        self._buf = b""
        self._pos = 0

    def raw(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf = self._rng.bytes(max(self._block, n))
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def uuid4(self) -> str:
        h = self.raw(16).hex()
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"

    def base62(self, n: int) -> str:
        return self.raw(n).translate(BASE62_TABLE).decode("ascii")

    def hex(self, n: int) -> str:
        return self.raw(n).translate(_HEX_TABLE).decode("ascii")

    def digits(self, n: int) -> str:
        return self.raw(n).translate(_DIGIT_TABLE).decode("ascii")
