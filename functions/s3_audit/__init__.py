"""The AWS S3 flow: CloudTrail log files in, metered downloads out to OGC RS."""
