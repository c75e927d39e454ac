"""deploy/ checked without a container engine, a cluster or AWS (helpers: configs.py)."""
