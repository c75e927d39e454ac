"""Label Studio on 127.0.0.1, from its own virtualenv (``make labelstudio``; the tests use it too).

Label Studio 1.23.2 pins ``pytz<2023`` and ``pyarrow<25``, which clash with ours, so it lives in
``.venv-labelstudio`` (``make labelstudio-install``, pinned by ``deploy/labelstudio/``). Started
here it:

- binds to 127.0.0.1 only, keeps its database and uploads under ``$CV_ASSETS_HOME/labelstudio``;
- sends nothing anywhere: analytics, Sentry (backend and frontend) and the PyPI version check off;
- serves round images from ``CV_ASSETS_LABELSTUDIO_FILES`` (its local-files document root), only
  to projects whose storage names the round's folder;
- has one user whose API token is ``CV_ASSETS_LABELSTUDIO_TOKEN``. Where the variable is unset, a
  token (and the user's password) is generated once into ``$CV_ASSETS_HOME/labelstudio/``, mode
  0600, and the command prints how to export it. The token is Label Studio's legacy API token
  (``--enable-legacy-api-token``): a fixed value that a deployment can hand the platform the same
  way; a personal access token made in Label Studio's UI works too.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from cv_assets.lib.annotation.labelstudio import TOKEN_VAR, URL_VAR
from cv_assets.lib.core.settings import PlatformConfig

USER = "annotator@cv-assets.local"
DEFAULT_BIN = Path(".venv-labelstudio/bin/label-studio")


def environment(data_dir: Path, files_root: Path, base: Mapping[str, str]) -> dict[str, str]:
    """Label Studio's environment: its data, the local-files root, and no telemetry."""
    return dict(base) | {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files_root),
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }


def command(binary: Path, port: int, data_dir: Path, token: str, password: str) -> list[str]:
    return [
        str(binary), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(data_dir), "--username", USER, "--password", password,
        "--user-token", token, "--enable-legacy-api-token", "--log-level", "WARNING",
    ]  # fmt: skip


def _kept_secret(path: Path, nbytes: int) -> str:
    """A value generated once and kept, readable by its owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(nbytes))
    return path.read_text().strip()


def main() -> None:
    cfg = PlatformConfig.from_env()
    home = cfg.home / "labelstudio"
    binary = Path(os.environ.get("CV_ASSETS_LABELSTUDIO_BIN", DEFAULT_BIN))
    if not binary.exists():
        sys.exit(f"{binary} not found: run `make labelstudio-install` first")
    port = int(cfg.labelstudio_url.rsplit(":", 1)[-1].split("/")[0])
    token_file = home / "token"
    token = os.environ.get(TOKEN_VAR) or _kept_secret(token_file, 20)
    password = _kept_secret(home / "password", 12)
    files = Path(cfg.labelstudio_files)
    files.mkdir(parents=True, exist_ok=True)
    print(f"Label Studio: {cfg.labelstudio_url} (user {USER}, password in {home / 'password'})")
    if not os.environ.get(TOKEN_VAR):
        print(
            f"For cv-assets annotate (make ui reads it itself): "
            f"export {TOKEN_VAR}=$(cat {token_file})"
        )
    print(f"{URL_VAR}={cfg.labelstudio_url}; round images served from {files}", flush=True)
    env = environment(home / "data", files, os.environ)
    os.execve(binary, command(binary, port, home / "data", token, password), env)


if __name__ == "__main__":
    main()
