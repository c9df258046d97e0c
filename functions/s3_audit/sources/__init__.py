"""The log sources of the AWS S3 flow: how each kind of log object is recognised, read and metered.

``registry`` picks a source from an object name; each source module holds its own record format and rules,
and everything after "a metered download with its S3 request identity" is shared (``s3_audit.ingest``).
"""
