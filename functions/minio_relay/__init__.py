"""MinIO flow: the audit webhook (authenticate, parse, meter, enqueue) and the deliver function (queue -> OGC RS)."""
