"""The demo's last step: an app fetches the beta channel, as the reference client does.

The release root (``releases/`` in the artifact store) is served by a plain static web server on
127.0.0.1, and ``ReleaseClient`` fetches the manifest, checks its signature against the public
key the demo pinned, picks its rollout bucket, downloads its platform's file and checks its
sha256: one app per platform (ONNX Runtime, Android's LiteRT, iOS's Core ML).
"""

from __future__ import annotations

import functools
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cv_assets.client.release_client import ReleaseClient
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.lib.mobile.releases import KEY_FILE_VAR, ROOT, write_key_pair
from cv_assets.read_side import open_store


def demo_key(cfg: PlatformConfig, env: dict[str, str]) -> Path | None:
    """The key the demo signs with: the user's, else one made once under the (ignored) home."""
    if env.get(KEY_FILE_VAR) or env.get("CV_ASSETS_RELEASE_KEY"):
        return Path(env[KEY_FILE_VAR]) if env.get(KEY_FILE_VAR) else None
    key = cfg.home / "keys" / "release.pem"
    if not key.exists():
        write_key_pair(key)
    env[KEY_FILE_VAR] = str(key)
    return key


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the demo prints its own lines
        pass


# What each platform's app asks for, in order of preference.
APPS = {"onnx": ("onnx_int8", "onnx_fp32"), "android": ("tflite_int8", "tflite"),
        "ios": ("mlpackage",)}  # fmt: skip


def fetch_beta(cfg: PlatformConfig, key: Path | None) -> str:
    """One line per platform on what an app on the beta channel gets."""
    root = open_store(cfg).local_path(ROOT.rstrip("/"))
    pub = key.with_name(key.name + ".pub") if key else None
    if root is None or not root.is_dir() or pub is None or not pub.exists():
        return "   beta: nothing to fetch here (no local release root or no pinned public key)"
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lines = []
        for platform, formats in APPS.items():
            with tempfile.TemporaryDirectory(prefix="demo-app-") as app:
                client = ReleaseClient(
                    f"http://127.0.0.1:{server.server_address[1]}", pub.read_bytes(), platform,
                    formats, "1.0.0", "demo-install", Path(app), channel="beta",
                )  # fmt: skip
                got = client.update()
                name = got.model_path.name if got.model_path else "-"
                lines.append(f"   beta {platform}: {got.status} v{got.model_version} ({name}) "
                             f"{got.reason}".rstrip())  # fmt: skip
        lines.append("   (each: signature, expiry, rollout and sha256 checked by the reference "
                     "client)")  # fmt: skip
        return "\n".join(lines)
    finally:
        server.shutdown()
        server.server_close()
