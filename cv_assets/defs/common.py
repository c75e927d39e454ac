"""What every asset group shares: who owns the assets (shown on each asset in the UI)."""

OWNERS = ["team:ml-platform"]
