"""Shared core of both flows: the metered line, outcome tallies, settings and the OGC RS client."""
