"""``ogc-audit extract``: print the metered lines of log files, and a per-reason summary."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from metering.line import MeteredDownload
from metering.outcomes import OutcomeTally

# Each source module exposes ``extract_downloads(paths, tally)`` yielding the metered downloads of all PATHs of
# one run: an event repeated in several of them is metered once.
_SOURCES = {
    "cloudtrail": "s3_audit.extract",
    "minio": "minio_relay.extract",
}

Extractor = Callable[[Sequence[str], OutcomeTally], Iterator[MeteredDownload]]


def extractor_for(source: str) -> Extractor:
    """The ``extract_downloads`` function of a source."""
    module = importlib.import_module(_SOURCES[source])
    function: Extractor = module.extract_downloads
    return function


def run_extract(source: str, paths: Sequence[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Write metered lines to ``out`` (stdout) and the summary to ``err`` (stderr); 1 when an input was quarantined."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    extract_downloads = extractor_for(source)
    tally = OutcomeTally()
    write = out.write
    for download in extract_downloads(paths, tally):
        write(download.to_line())
        write("\n")
    out.flush()
    err.write(json.dumps({"source": source, **tally.as_dict()}, indent=None) + "\n")
    return 1 if tally.quarantined else 0
