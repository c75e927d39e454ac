"""Intake: landed batches become immutable raw copies, validated samples and features."""
