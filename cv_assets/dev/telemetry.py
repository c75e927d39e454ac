"""The telemetry ingest service's token for a local run (``make telemetry``, ``make ui``).

The service refuses to start without ``CV_ASSETS_TELEMETRY_TOKEN``. Where the variable is unset,
a token is generated once into ``$CV_ASSETS_HOME/telemetry/token`` (mode 0600) and kept, as
``make labelstudio`` keeps Label Studio's, so the apps and clients pointed at this home keep
working across restarts. The environment's token always wins. The token itself is never printed:
only the file that holds it.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

TOKEN_VAR = "CV_ASSETS_TELEMETRY_TOKEN"


def token_file(home: Path) -> Path:
    return home / "telemetry" / "token"


def service_token(home: Path, env: Mapping[str, str]) -> tuple[str, Path | None]:
    """The token the service takes and the file it is kept in (None: from the environment).

    Raises:
        ValueError: the kept file is empty.
    """
    given = env.get(TOKEN_VAR, "").strip()
    if given:
        return given, None
    path = token_file(home)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a launcher started at the same
        # moment reads either no file or the full token, never a half-written one, and the first
        # link wins.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty: delete it to generate a new token, or set {TOKEN_VAR}")
    return token, path


def service_env(home: Path, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the service's token, after saying where the token comes from."""
    token, path = service_token(home, env)
    if path is None:
        print(f"telemetry: the token is {TOKEN_VAR} from the environment", flush=True)
    else:
        print(
            f"telemetry: the token is in {path} (for a client: export {TOKEN_VAR}=$(cat {path}))",
            flush=True,
        )
    return dict(env) | {TOKEN_VAR: token}


def main() -> None:
    """``make telemetry``: the service in this process, with the token resolved."""
    from cv_assets.lib.core.settings import PlatformConfig

    try:
        env = service_env(PlatformConfig.from_env().home, os.environ)
    except ValueError as e:
        sys.exit(f"cv_assets.dev.telemetry: {e}")
    os.execve(sys.executable, [sys.executable, "-m", "cv_assets.telemetry"], env)


if __name__ == "__main__":
    main()
