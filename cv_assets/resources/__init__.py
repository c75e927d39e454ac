"""Typed Dagster resources. ``environment.platform_resources`` is the one place they are built."""
