"""Dataset versioning: every accepted sample, snapshotted and split by content hash."""
