"""Monitoring group: drift of each landed batch against the champion's training data."""
