"""CDK stacks and constructs of the OGC audit ingest: the S3 audit flow and the MinIO relay flow."""
