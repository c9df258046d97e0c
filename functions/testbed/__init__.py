"""Development tooling of ogc-audit-ingest: the reference OGC RS, the local AWS harness, samples, demo and drill."""
