"""``python -m cv_assets.telemetry`` (``make telemetry``): the ingest service under uvicorn.

Listens on ``CV_ASSETS_TELEMETRY_HOST`` (default 127.0.0.1: loopback unless a deployment says
otherwise) and ``CV_ASSETS_TELEMETRY_PORT`` (default 8090). Exits with status 2 and one line when
the configuration is incomplete (no token, say).
"""

from __future__ import annotations

import logging
import os
import sys


def main() -> int:
    import uvicorn

    from cv_assets.lib.core.settings import PlatformConfig
    from cv_assets.telemetry.app import TelemetrySettings, create_app

    try:
        settings = TelemetrySettings.from_env(PlatformConfig.from_env())
        host = os.environ.get("CV_ASSETS_TELEMETRY_HOST", "127.0.0.1")
        port = int(os.environ.get("CV_ASSETS_TELEMETRY_PORT", "8090"))
    except ValueError as e:
        print(f"cv_assets.telemetry: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # access_log off: the service logs one line per batch itself, with counts.
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
