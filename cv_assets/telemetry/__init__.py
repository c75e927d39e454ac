"""The telemetry ingest service (``python -m cv_assets.telemetry``): see ``app.py``."""
