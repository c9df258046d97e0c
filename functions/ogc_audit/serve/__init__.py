"""``ogc-audit serve``: the standalone MinIO relay (accept, spool, answer; deliver behind)."""
