"""Command line and local tools of ogc-audit-ingest."""
