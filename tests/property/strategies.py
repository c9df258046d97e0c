"""Hypothesis strategies shared by the property suite: realistic inputs from ``testbed.samples``, then damaged.

Records start as what CloudTrail and MinIO really write (a presigned GetObject and the variants the rules must
tell apart) and are mutated: fields dropped, values replaced by wrong types (numbers, lists, null, nested
objects), huge strings (100k characters), odd unicode, invalid UUIDs, odd sizes and timestamps with offsets,
fractions and garbage. Lone surrogates cannot be written as raw UTF-8, so they reach the parsers through JSON
escapes (``\\ud800``) or as undecodable bytes. Files are truncated and bit-flipped; bodies are random bytes or
NDJSON with bad lines.

Everything here is deterministic given hypothesis' choices, so a CI run with ``derandomize`` is reproducible.
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from metering.outcomes import Reason
from testbed.samples import Download, Variant, cloudtrail_record, minio_entry

HUGE = 100_000
"""Characters in a huge string value."""

Path = tuple[str | int, ...]
Json = Any

# ---- scalar values ------------------------------------------------------------------------------

ODD_STRINGS = (
    "",
    " ",
    "\t\r\n",
    "\x00",
    "\x01",
    "\x1f",
    "\x7f",
    "\u0085",
    "\u00a0",
    "\u2028",
    "\u3000",
    "\ufeff",
    "\u202e",
    "\ufffe",
    "\uffff",
    "e\u0301",
    "\U0001f600",
    "\ud800",  # lone surrogates: JSON-escaped by json.dumps(ensure_ascii=True)
    "\udfff",
    "\ud83d\ude00",  # a valid pair written as two escapes
    "|",
    "a|b",
    "||||||",
    "null",
    "{}",
    "[]",
    "0",
    "-1",
    "\\",
    '"',
    "\u0661\u0662",  # Arabic-Indic digits
    "\uff11\uff12",  # fullwidth digits
)

_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
huge_strings = st.sampled_from(["a", "\u00e9", "|", "\U0001f600", "\x00", " ", "-", "7"]).map(lambda char: char * HUGE)
odd_text: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=24),
    st.text(st.one_of(st.characters(), _SURROGATES), max_size=12),
    huge_strings,
)

UUIDS = st.uuids().map(str)
_FULLWIDTH = str.maketrans("0123456789abcdef", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19abcdef")
invalid_uuids: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(["not-a-uuid", "1-2-3-4-5", "user-6f1d2c8e", "{}", "null", "|", "0" * 32]),
    UUIDS.map(lambda text: text[:-1]),
    UUIDS.map(lambda text: text + "0"),
    UUIDS.map(lambda text: text.replace("-", "")),
    UUIDS.map(lambda text: "g" + text[1:]),
    UUIDS.map(lambda text: "{" + text + "}"),
    UUIDS.map(lambda text: "urn:uuid:" + text),
    UUIDS.map(lambda text: text.translate(_FULLWIDTH)),
    UUIDS.map(lambda text: text.replace("-", "\u2010")),
    UUIDS.map(lambda text: text + "\x00"),
    UUIDS.map(lambda text: text[:8] + "|" + text[9:]),
)
_PADDING = st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u3000"])
uuid_like: st.SearchStrategy[str] = st.one_of(
    UUIDS,
    UUIDS.map(str.upper),
    st.tuples(_PADDING, UUIDS, _PADDING).map("".join),
    invalid_uuids,
)
item_ids: st.SearchStrategy[str] = st.one_of(
    st.from_regex(r"S2[AB]_MSIL2A_20251026T050649_N0511_R019_T[0-9]{2}[P-S][F-K][P-S]", fullmatch=True),
    st.tuples(st.sampled_from(["S2A", "item"]), st.sampled_from(sorted(map(chr, [*range(0x20), 0x7F])))).map("".join),
    st.text(min_size=1, max_size=40).filter(lambda text: "|" not in text),
    st.sampled_from(ODD_STRINGS),
    huge_strings,
)

# sizes: valid, negative, huge, floats, text, wrong types
sizes: st.SearchStrategy[Json] = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**53), max_value=2**53).map(float),
    st.floats(),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(
        [
            "16384.0",
            " 12 ",
            "-1",
            "-0",
            "1e3",
            "1E400",
            "abc",
            "",
            "0x10",
            "1_000",
            "nan",
            "inf",
            "\uff11\uff12",
            "٣",
            "9223372036854775807",
            "9223372036854775808",
            "1.5",
            "+7",
            "9" * 20,
            "9" * 5_000,  # past Python's 4,300-digit int-from-str limit
            "1" * 4_301 + ".0",
            "0" * 30 + "7",
        ]
    ),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def _formatted_instant(draw: st.DrawFn) -> str:
    """An ISO-8601-ish timestamp: any year, fractions of 0-12 digits, separators and offsets valid or not."""
    instant = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
    separator = draw(st.sampled_from(["T", "T", "t", " ", "_"]))
    text = f"{instant.year:04d}-{instant.month:02d}-{instant.day:02d}{separator}{instant:%H:%M:%S}"
    digits = draw(st.integers(min_value=0, max_value=12))
    if digits:
        text += "." + f"{instant.microsecond:06d}{draw(st.integers(0, 999_999)):06d}"[:digits]
    offset = draw(
        st.one_of(
            st.sampled_from(["Z", "Z", "z", "", "+00:00", "-00:00", "+24:00", "+0530", "+05:30:15", " Z", "UTC"]),
            st.builds(
                lambda sign, hours, minutes: f"{sign}{hours:02d}:{minutes:02d}",
                st.sampled_from("+-"),
                st.integers(0, 23),
                st.integers(0, 59),
            ),
        )
    )
    return text + offset


timestamps: st.SearchStrategy[Json] = st.one_of(
    _formatted_instant(),
    st.sampled_from(
        [
            "",
            "now",
            "2025-10-27",
            "10:12:30Z",
            "2025-10-27T10:12Z",
            "2025-02-30T10:12:30Z",
            "2025-10-27T24:00:00Z",
            "2025-10-27T10:12:60Z",
            "+2025-10-27T10:12:30Z",
            "20251027T101230Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "0001-01-01T00:00:00+01:00",
            "0999-01-01T10:00:00.5Z",
        ]
    ),
    odd_text,
    st.integers(),
    st.floats(allow_nan=False),
)

_LEAF: st.SearchStrategy[Json] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)
wrong_types: st.SearchStrategy[Json] = st.recursive(
    _LEAF,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
"""Any JSON value: null, booleans, numbers, odd strings, lists and nested objects."""

# ---- realistic records --------------------------------------------------------------------------

downloads: st.SearchStrategy[Download] = st.builds(
    Download,
    user_id=UUIDS,
    collection_id=UUIDS,
    item_id=st.from_regex(r"S2[AB]_MSIL2A_20251026T050649_N0511_R019_T[0-9]{2}[P-S][F-K][P-S]", fullmatch=True),
    asset=st.sampled_from(["B04.tif", "TCI.tif", "thumbnail.jpg", "dir/with space+plus.tif"]),
    # Real downloads: since S3 exists and not in the future (the window the rules keep, see expected_in_window).
    when=st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime.now(UTC).replace(tzinfo=None)).map(
        lambda when: when.replace(tzinfo=UTC)
    ),
    size=st.integers(min_value=0, max_value=2**40),
    event_id=UUIDS,
)
variants: st.SearchStrategy[Variant] = st.one_of(st.just(Variant.PRESIGNED_GET), st.sampled_from(Variant))

# Values that make sense for a field name (besides any wrong type), so mutations reach the deeper rules.
_CLOUDTRAIL_VALUES: dict[str, st.SearchStrategy[Json]] = {
    "eventSource": st.sampled_from(["s3.amazonaws.com", "kms.amazonaws.com", "S3.amazonaws.com", ""]),
    "eventName": st.sampled_from(["GetObject", "HeadObject", "PutObject", "getobject", "GetObjectAcl"]),
    "eventTime": timestamps,
    "eventID": st.one_of(UUIDS, st.just("")),
    "errorCode": st.sampled_from(["AccessDenied", "NoSuchKey", "", "SignatureDoesNotMatch"]),
    "errorMessage": odd_text,
    "AuthenticationMethod": st.sampled_from(["QueryString", "AuthHeader", "queryString", ""]),
    "bytesTransferredOut": sizes,
    "userId": uuid_like,
    "collectionId": uuid_like,
    "itemId": item_ids,
    "X-Amz-Expires": st.sampled_from(["3600", "0", ""]),
    "X-Amz-Signature": st.just("a" * 64),
    "X-Amz-Credential": st.just("AKIAQX2EXAMPLE7ZPR3Q/20251027/ap-south-1/s3/aws4_request"),
}
_MINIO_VALUES: dict[str, st.SearchStrategy[Json]] = {
    "time": timestamps,
    "name": st.sampled_from(["GetObject", "HeadObject", "PutObject", "ListObjectsV2", "getobject"]),
    "statusCode": st.one_of(
        st.sampled_from([200, 206, 204, 299, 300, 304, 403, 404, 500, 0, -200, 2**70]), st.integers()
    ),
    "tx": sizes,
    "Content-Length": sizes,
    "userId": uuid_like,
    "collectionId": uuid_like,
    "itemId": item_ids,
    "X-Amz-Signature": st.just("b" * 64),
    "X-Amz-Credential": st.just("stacpresigner/20251027/us-east-1/s3/aws4_request"),
    "requestID": st.one_of(st.just(""), st.text(max_size=20)),
    "deploymentid": st.one_of(UUIDS, st.just("")),
}

# Names that the rules read: new keys are drawn from them as well as from random text.
_CLOUDTRAIL_NAMES = ("errorCode", "X-Amz-Expires", "X-Amz-Signature", "X-Amz-Credential", "userId", "itemId")
_MINIO_NAMES = ("tx", "statusCode", "X-Amz-Signature", "X-Amz-Credential", "userId", "itemId", "Content-Length")


def paths(value: Json, prefix: Path = ()) -> Iterator[Path]:
    """Every path to a value inside ``value`` (object keys and list indices), parents before children."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from paths(child, (*prefix, index))


def containers(value: Json, prefix: Path = ()) -> Iterator[Path]:
    """Every path to an object inside ``value`` (the root included)."""
    if isinstance(value, dict):
        yield prefix
        for key, child in value.items():
            yield from containers(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from containers(child, (*prefix, index))


def get_path(value: Json, path: Path) -> Json:
    for step in path:
        value = value[step]
    return value


@dataclass(frozen=True, slots=True)
class Mutation:
    """One change to a record, kept for the failure report."""

    op: str
    path: Path
    value: Json = None

    def apply(self, record: Json) -> None:
        parent = get_path(record, self.path[:-1])
        last = self.path[-1]
        if self.op == "drop":
            del parent[last]
        else:
            parent[last] = self.value


def replaced(path: Path, value: Json) -> Mutation:
    return Mutation("replace", path, value)


def dropped(path: Path) -> Mutation:
    return Mutation("drop", path)


def one_change(path: Path, values: st.SearchStrategy[Json]) -> st.SearchStrategy[list[Mutation]]:
    """The field at ``path`` set to one of ``values``: the single change of a rule breaker."""
    return values.map(lambda value: [replaced(path, value)])


# Values an id rule treats as missing: empty, white space, control characters.
BLANK_IDS = st.sampled_from(["", " ", "\t", "\u00a0", "\x01", "\x00\x1f"])


@dataclass(frozen=True, slots=True)
class MutationKit:
    """A realistic record and a pool of values drawn by hypothesis, from which a seeded PRNG derives variants.

    Drawing every mutation through hypothesis costs ~1 ms per record; a kit costs one draw of a record and a
    value pool, then each variant is a cheap deterministic mix: paths, operations and values chosen by
    ``random.Random(seed)`` among the kit's values. Hypothesis still explores (and shrinks) the records, the
    values and the seed; a failing variant is reported with its mutations.
    """

    base: Json
    pool: tuple[Json, ...]
    """Any JSON values: wrong types, odd and huge strings."""
    by_name: Mapping[str, tuple[Json, ...]]
    """Values that make sense for a field name, so mutations reach the deeper rules."""
    new_names: tuple[str, ...]
    seed: int

    def variants(
        self, count: int, allowed: Callable[[Path], bool] = lambda _path: True, max_mutations: int = 4
    ) -> Iterator[tuple[Json, list[Mutation]]]:
        """``count`` mutated deep copies of the base record with up to ``max_mutations`` changes each."""
        rng = random.Random(self.seed)
        for _ in range(count):
            yield self.mutate(rng, allowed, max_mutations)

    def mutate(
        self, rng: random.Random, allowed: Callable[[Path], bool], max_mutations: int
    ) -> tuple[Json, list[Mutation]]:
        record = copy.deepcopy(self.base)
        done: list[Mutation] = []
        for _ in range(rng.randint(0, max_mutations)):
            op = rng.choice(("drop", "replace", "replace", "add"))
            if op == "add":
                path: Path = (*rng.choice(list(containers(record))), rng.choice(self.new_names))
            else:
                candidates = [path for path in paths(record) if allowed(path)]
                if not candidates:
                    continue
                path = rng.choice(candidates)
                if op == "drop" and isinstance(path[-1], int):
                    op = "replace"  # dropping a list element would renumber its siblings
            if not allowed(path):
                continue
            mutation = Mutation(op, path, None if op == "drop" else self.value_for(rng, path[-1]))
            mutation.apply(record)
            done.append(mutation)
        return record, done

    def value_for(self, rng: random.Random, name: str | int) -> Json:
        known = self.by_name.get(name) if isinstance(name, str) else None
        value = rng.choice(known) if known and rng.random() < 0.7 else rng.choice(self.pool)
        return copy.deepcopy(value)  # later mutations may change inside it


def kits(
    base: st.SearchStrategy[Json], known: Mapping[str, st.SearchStrategy[Json]], new_names: tuple[str, ...]
) -> st.SearchStrategy[MutationKit]:
    """Kits around ``base`` records; new keys are drawn from ``new_names`` and random short text."""
    return st.builds(
        MutationKit,
        base=base,
        pool=st.lists(wrong_types, min_size=3, max_size=8).map(tuple),
        by_name=st.fixed_dictionaries(
            {name: st.lists(values, min_size=1, max_size=2).map(tuple) for name, values in known.items()}
        ),
        new_names=st.lists(st.text(max_size=8), max_size=3).map(lambda extra: new_names + tuple(extra)),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
    )


def cloudtrail_kits(new_names: tuple[str, ...] = _CLOUDTRAIL_NAMES) -> st.SearchStrategy[MutationKit]:
    """Kits around CloudTrail records (mostly a presigned GetObject)."""
    base = st.builds(cloudtrail_record, downloads, variants, float_bytes=st.booleans())
    return kits(base, _CLOUDTRAIL_VALUES, new_names)


def minio_kits(new_names: tuple[str, ...] = _MINIO_NAMES) -> st.SearchStrategy[MutationKit]:
    """Kits around MinIO audit entries (mostly a presigned GetObject, sometimes pre-2021 without ``tx``)."""
    base = st.builds(minio_entry, downloads, variants, legacy=st.booleans())
    return kits(base, _MINIO_VALUES, new_names)


def valid_cloudtrail_kits(new_names: tuple[str, ...]) -> st.SearchStrategy[MutationKit]:
    """Kits around a pristine presigned GetObject record (metered as it is)."""
    return kits(valid_cloudtrail_record(), _CLOUDTRAIL_VALUES, new_names)


def valid_minio_kits(new_names: tuple[str, ...]) -> st.SearchStrategy[MutationKit]:
    """Kits around a pristine presigned GetObject entry (metered as it is)."""
    return kits(valid_minio_entry(), _MINIO_VALUES, new_names)


def valid_cloudtrail_record() -> st.SearchStrategy[Json]:
    """A pristine presigned GetObject record: metered as it is."""
    return st.builds(cloudtrail_record, downloads, st.just(Variant.PRESIGNED_GET), float_bytes=st.booleans())


def valid_minio_entry() -> st.SearchStrategy[Json]:
    """A pristine presigned GetObject entry: metered as it is."""
    return st.builds(minio_entry, downloads, st.just(Variant.PRESIGNED_GET), legacy=st.booleans())


# ---- JSON text, files and bodies ----------------------------------------------------------------


def to_json(value: Json, *, ascii_only: bool = True, indent: int | None = None) -> bytes:
    """JSON bytes. ``ascii_only`` writes every non-ASCII character (lone surrogates too) as a ``\\u`` escape;
    otherwise raw UTF-8, where a lone surrogate becomes undecodable bytes (``surrogatepass``)."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    return text.encode("utf-8", "surrogatepass")


json_styles = st.builds(
    lambda ascii_only, indent: {"ascii_only": ascii_only, "indent": indent},
    st.booleans(),
    st.sampled_from([None, None, 0, 2]),
)


@st.composite
def bit_flips(draw: st.DrawFn, data: bytes, max_flips: int = 3) -> bytes:
    """``data`` with a few bits flipped (never empty data)."""
    flipped = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=max_flips))):
        position = draw(st.integers(min_value=0, max_value=len(flipped) - 1))
        flipped[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
    return bytes(flipped)


def gzipped(data: bytes) -> bytes:
    """Deterministic gzip (no timestamp in the header)."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in chunks of ``size`` bytes, as S3 hands them out."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


BAD_LINES = st.one_of(
    st.binary(max_size=40).map(lambda raw: raw.replace(b"\n", b" ")),
    st.sampled_from(
        [
            b"{",
            b"}",
            b'{"api":',
            b"[1,",
            b"nul",
            b'"\\ud800"x',
            b"\xff\xfe",
            b"{'a': 1}",
            b'{"a":1}}',
            b"NaN",
            b"[" * 1100 + b"]" * 1100,
            b'{"a":' * 1100 + b"1" + b"}" * 1100,
        ]
    ),
)
"""NDJSON lines that are not JSON (including nesting deeper than any JSON decoder's stack)."""
BLANK_LINES = st.sampled_from([b"", b" ", b"\r", b"\t \t"])


# ---- budget -------------------------------------------------------------------------------------

# Inputs each parser must receive in a run of the ``ci`` profile (issue 4: at least 10,000 per parser).
CI_MIN_INPUTS = 10_000
CI_MAX_EXAMPLES = 1_000


def examples(share: float = 1.0) -> int:
    """Examples for a test: ``share`` of the profile's ``max_examples`` (at least 1)."""
    from hypothesis import settings

    return max(1, round(settings().max_examples * share))


def min_inputs() -> int:
    """Inputs a parser must get in this run: 10,000 under ``ci``, proportionally fewer under other profiles."""
    from hypothesis import settings

    return CI_MIN_INPUTS * settings().max_examples // CI_MAX_EXAMPLES


class Generated:
    """Counts of generated inputs handed to each parser in this process (printed at the end of the session)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, parser: str, count: int = 1) -> None:
        """Count ``count`` more inputs handed to ``parser``."""
        self.counts[parser] += count


GENERATED = Generated()


# ---- the oracle's id rules (docs/design.md), shared by the CloudTrail and MinIO models ---------------------------

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
JAVA_BLANK = "".join(chr(code) for code in range(0x21))  # what java.lang.String.trim() removes
CONTROL_CHARACTERS = frozenset(chr(code) for code in [*range(0x20), 0x7F])  # docs/design.md: no control character
Expected = tuple[str, str]
_MISSING = (Reason.MISSING_USER_ID, Reason.MISSING_COLLECTION_ID, Reason.MISSING_ITEM_ID)


def expected_in_window(when: str) -> bool:
    """Whether a whole-second UTC time (``YYYY-MM-DDTHH:MM:SSZ``) is one the rules keep: from 2006-01-01 (before
    S3 opened) to a day after now; the rules quarantine the others as INVALID_TIMESTAMP."""
    instant = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return datetime(2006, 1, 1, tzinfo=UTC) <= instant <= datetime.now(UTC) + timedelta(days=1)


def expected_id_outcome(user: object, collection: object, item: object) -> Expected | None:
    """The filter a userId/collectionId/itemId triple earns, or None when the ids let the entry through."""
    ids = []
    for value, missing in zip((user, collection, item), _MISSING, strict=True):
        # Blank for Python and for Java's trim(): OGC RS would find the field empty.
        if not isinstance(value, str) or not value.strip().strip(JAVA_BLANK):
            return ("filtered", missing)
        ids.append(value.strip())
    if not UUID.fullmatch(ids[0]):
        return ("filtered", Reason.INVALID_USER_ID)
    if not UUID.fullmatch(ids[1]):
        return ("filtered", Reason.INVALID_COLLECTION_ID)
    if "|" in ids[2] or not CONTROL_CHARACTERS.isdisjoint(str(item)):
        return ("filtered", Reason.INVALID_ITEM_ID)
    return None
