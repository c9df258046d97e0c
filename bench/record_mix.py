"""The mix of record kinds the extract benchmarks generate, and the draw of a file's records from it.

The CloudTrail and the S3 access-log benchmarks generate the same mix: presigned successes, the variants of
``testbed.samples.Variant`` that the metering rules refuse, bucket listings and re-delivered records.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

from testbed.samples import Variant

LIST_BUCKET: Literal["list_bucket"] = "list_bucket"  # a listing of the bucket: no object, nothing to meter
DUPLICATE: Literal["duplicate"] = "duplicate"  # a presigned success delivered once more
Kind = Variant | Literal["list_bucket", "duplicate"]

# Share of each kind of record, drawn in this order; the rest of 1.0 is presigned successes.
MIX: dict[Kind, float] = {
    Variant.FAILED_403: 0.08,
    Variant.FAILED_404: 0.04,
    Variant.HEADER_SIGNED: 0.08,
    Variant.HEAD_OBJECT: 0.07,
    Variant.PUT_OBJECT: 0.05,
    LIST_BUCKET: 0.04,
    Variant.MISSING_USER: 0.05,
    Variant.NON_UUID_USER: 0.04,
    DUPLICATE: 0.03,
}

Record = TypeVar("Record")


def draw(rng: random.Random) -> Kind:
    """The kind of the next record, from one ``rng.random()``."""
    value = rng.random()
    for kind, share in MIX.items():
        if value < share:
            return kind
        value -= share
    return Variant.PRESIGNED_GET


def records(rng: random.Random, count: int, make: Callable[[int, Kind], Record]) -> Iterator[Record]:
    """``count`` records of kinds drawn from MIX, ``make(index, kind)`` building each one but the duplicates.

    A duplicate is an earlier presigned success again, the same object; while there is none yet, a presigned
    success is made in its place.
    """
    issued: list[Record] = []
    for index in range(count):
        kind = draw(rng)
        if kind == DUPLICATE:
            if issued:
                yield issued[rng.randrange(len(issued))]
                continue
            kind = Variant.PRESIGNED_GET
        record = make(index, kind)
        if kind is Variant.PRESIGNED_GET:
            issued.append(record)
        yield record
