"""The S3 requests already metered in one input, held compactly so a 1 GiB log file cannot exhaust memory.

A log file can hold millions of metered downloads (1 GiB of minimal records is ~4 million). A Python set of their
request keys (``s3-request:<bucket>/<request ID>``, ~45 characters) costs ~130 bytes per key: 500 MB for such a
file. Here each key is reduced to a 64-bit BLAKE2b fingerprint stored in an open-addressing table (``array('Q')``,
linear probing, at most two thirds full): 12 to 24 bytes per key, about 100 MB at the 1 GiB bound while growing.

Up to EXACT_KEYS keys (a busy CloudTrail file: 50,000 records, ~30,000 metered) the keys themselves sit in a plain
set, with no fingerprint to compute and no probing in Python (the fast path of ``extract`` and ``s3_audit``); past
it they move into the table once, and the table takes every later key.

The cost is a false match: two different requests of one file with the same fingerprint, the second filtered as a
duplicate. For n downloads in a file the chance is about n²/2^65: 3e-10 for 100,000 (a busy CloudTrail file),
4e-7 for 4 million (the 1 GiB bound). The fingerprint is not keyed by a secret: it must be the same on every retry of
the file (the downloads are chunked and keyed in the same way each time), and the request ids are chosen by S3
and CloudTrail, not by whoever writes the file.
"""

from __future__ import annotations

import sys
from array import array
from hashlib import blake2b

from metering.line import MeteredDownload

EXACT_KEYS = 1 << 15  # ~4 MB of key strings at most (a busy CloudTrail file meters ~30,000), then the table
_INITIAL_SLOTS = 1 << 10  # a power of two: a slot is found by masking
_EMPTY = 0  # a fingerprint of 0 is stored as 1, so 0 always means a free slot


def fingerprint(key: str) -> int:
    """The 64-bit fingerprint of a request key (never 0)."""
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class SeenRequests:
    """The request identity (``event_id``) of every download metered so far in one input, so a repeat is metered once.

    Only metered downloads are remembered: a repeated filtered event is simply filtered again, and memory stays
    proportional to the downloads, not to the records. A download without an id cannot be matched and is kept.
    """

    def __init__(self, exact_keys: int = EXACT_KEYS) -> None:
        self._exact: set[str] | None = set()
        self._exact_keys = exact_keys
        self._slots = array("Q", bytes(8 * _INITIAL_SLOTS))
        self._mask = _INITIAL_SLOTS - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count if self._exact is None else len(self._exact)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the table (or, while the keys are few, by the set of them, strings included)."""
        if self._exact is not None:
            return sys.getsizeof(self._exact) + sum(sys.getsizeof(key) for key in self._exact)
        return self._slots.itemsize * len(self._slots)

    def first_time(self, download: MeteredDownload) -> bool:
        """True the first time a request is offered (and for downloads without an id), False for a repeat."""
        key = download.event_id
        if not key:
            return True
        exact = self._exact
        if exact is None:
            return self._add(fingerprint(key))
        if key in exact:
            return False
        exact.add(key)
        if len(exact) > self._exact_keys:
            self._exact = None
            for known in exact:
                self._add(fingerprint(known))
        return True

    def _add(self, value: int) -> bool:
        slots, mask = self._slots, self._mask
        index = value & mask
        while (current := slots[index]) != _EMPTY:
            if current == value:
                return False
            index = (index + 1) & mask
        slots[index] = value
        self._count += 1
        if 3 * self._count > 2 * len(slots):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = 2 * len(old) - 1
        self._count = 0
        for value in old:
            if value != _EMPTY:
                self._add(value)
