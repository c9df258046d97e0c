"""``ogc-audit extract``: print the metered lines of log files, and a per-reason summary."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from metering.line import MeteredDownload
from metering.outcomes import OutcomeTally

# Each source has a function ``(paths, tally)`` yielding the metered downloads of all PATHs of
# one run: an event repeated in several of them is metered once.
_SOURCES = {
    "cloudtrail": ("s3_audit.extract", "extract_downloads"),
    "s3-access-log": ("s3_audit.extract", "extract_access_log_downloads"),
    "minio": ("minio_relay.extract", "extract_downloads"),
}

Extractor = Callable[[Sequence[str], OutcomeTally], Iterator[MeteredDownload]]


def extractor_for(source: str) -> Extractor:
    """The extract function of a source (``cloudtrail``, ``s3-access-log``, ``minio``)."""
    module_name, function_name = _SOURCES[source]
    function: Extractor = getattr(importlib.import_module(module_name), function_name)
    return function


def run_extract(source: str, paths: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write metered lines to ``out`` (stdout) and the summary to ``err`` (stderr); 1 when an input was quarantined."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    extract_downloads = extractor_for(source)
    tally = OutcomeTally()
    write = out.write
    for download in extract_downloads(paths, tally):
        write(download.to_line() + "\n")
    out.flush()
    err.write(json.dumps({"source": source, **tally.as_dict()}, indent=None) + "\n")
    return 1 if tally.quarantined else 0
