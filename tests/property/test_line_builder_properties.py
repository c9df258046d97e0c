"""Properties of ``metering.line.LineBuilder``: what it remembers never changes an outcome.

The CloudTrail and access-log readers build their downloads through a LineBuilder, which remembers the user and
collection ids and the timestamps it found valid. Fed the same values as ``check_ids`` then ``build_download``
(values drawn from small pools, so they repeat as they do in a log file, valid and invalid alike), it must give
exactly their outcome, whatever it saw before and however often it forgot.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.line import Backend, LineBuilder, MeteredDownload, build_download, check_ids
from metering.outcomes import Skip
from s3_audit.sources.access_log import rfc3339
from tests.property.strategies import (
    BLANK_IDS,
    GENERATED,
    UUIDS,
    Json,
    examples,
    item_ids,
    min_inputs,
    sizes,
    timestamps,
    uuid_like,
)

DOWNLOADS_PER_EXAMPLE = 24
_RECENT = st.datetimes(min_value=datetime(2006, 1, 1)).map(lambda when: when.strftime("%Y-%m-%dT%H:%M:%SZ"))
_IDS = st.one_of(UUIDS, uuid_like, BLANK_IDS, st.none())
_ACCESS_LOG_TIMES = st.one_of(
    st.sampled_from(["27/Oct/2025:10:12:30 +0000", "27/Oct/2025:15:42:30 +0530", "27/Okt/2025:10:12:30 +0000"]),
    st.sampled_from(["01/Jan/1970:00:00:00 +0000", "31/Dec/9999:23:59:59 +0000", ""]),
)


def expected(
    user: str | None, collection: str | None, item: str | None, timestamp: Json, size: Json
) -> MeteredDownload | Skip:
    """What the builder must give: the shared id rules, then build_download."""
    bad_ids = check_ids(user, collection, item)
    if bad_ids is not None:
        return bad_ids
    assert user is not None and collection is not None and item is not None  # noqa: PT018
    return build_download(
        user_id=user,
        collection_id=collection,
        item_id=item,
        timestamp=timestamp,
        bytes_sent=size,
        backend=Backend.AWS_S3,
        event_id="e",
    )


@settings(max_examples=examples(0.5))
@given(
    users=st.lists(_IDS, min_size=1, max_size=4),
    collections=st.lists(_IDS, min_size=1, max_size=3),
    items=st.lists(st.one_of(item_ids, st.none()), min_size=1, max_size=4),
    times=st.lists(st.one_of(_RECENT, timestamps), min_size=1, max_size=4),
    picks=st.lists(
        st.tuples(*[st.integers(0, 3)] * 4, sizes), min_size=DOWNLOADS_PER_EXAMPLE, max_size=DOWNLOADS_PER_EXAMPLE
    ),
    remembered=st.sampled_from([1, 2, 1 << 16]),
)
def _check_builder(  # noqa: PLR0917 - hypothesis passes each drawn list by name
    users: list[str | None],
    collections: list[str | None],
    items: list[str | None],
    times: list[Json],
    picks: list[tuple[int, int, int, int, Json]],
    remembered: int,
) -> None:
    builder = LineBuilder(Backend.AWS_S3, max_remembered=remembered)
    for user, collection, item, time, size in picks:
        values = (users[user % len(users)], collections[collection % len(collections)], items[item % len(items)])
        timestamp = times[time % len(times)]
        got = builder.download(*values, timestamp=timestamp, bytes_sent=size, event_id="e")
        assert got == expected(*values, timestamp, size), (values, timestamp, size)
    GENERATED.add("metering.LineBuilder", len(picks))


def test_remembering_never_changes_an_outcome() -> None:
    before = GENERATED.counts["metering.LineBuilder"]
    _check_builder()
    assert GENERATED.counts["metering.LineBuilder"] - before >= min_inputs()


@settings(max_examples=examples(0.2))
@given(times=st.lists(_ACCESS_LOG_TIMES, min_size=1, max_size=DOWNLOADS_PER_EXAMPLE))
def test_a_source_time_text_is_converted_before_it_is_judged(times: list[str]) -> None:
    builder = LineBuilder(Backend.AWS_S3, time_text=rfc3339)
    user = "3f1c9a52-7a4e-4c1e-9f0b-2d5f8e6a1b7c"
    for time in times:
        got = builder.download(user, user, "item", timestamp=time, bytes_sent="16384", event_id="e")
        assert got == expected(user, user, "item", rfc3339(time), "16384")
    GENERATED.add("metering.LineBuilder", len(times))
