"""``cv-assets release``: the signed release channels apps fetch their model from.

- ``keygen --out PATH``: an Ed25519 key pair (PATH, mode 0600, and PATH.pub); refused inside the
  repository unless git ignores the place (``$CV_ASSETS_HOME``), so a key is never committed.
- ``show [--channel C] [--json]``: each channel's manifest, checked against the published key.
- ``publish VERSION --channel C [--rollout P] [--min-app-version V] [--ttl-days D]``: the
  version's app files that passed their checks, under a new signed manifest.
- ``rollout PERCENT --channel C``: the same release to another share of installs.
- ``rollback --channel C``: a new signed manifest pointing at the previous version.

The private key comes from the environment only: ``CV_ASSETS_RELEASE_KEY_FILE`` (a path) or
``CV_ASSETS_RELEASE_KEY`` (the PEM itself). Without one, nothing is published.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cv_assets.lib.core.settings import PlatformConfig

REPO = Path(__file__).resolve().parents[2]


class ReleaseCliError(Exception):
    pass


def keygen(out: Path) -> str:
    from cv_assets.lib.mobile.releases import write_key_pair

    out = out.expanduser().absolute()
    if out.is_relative_to(REPO) and not _ignored(out):
        raise ReleaseCliError(
            f"{out} is inside the repository ({REPO}) where git could commit it: keep the key "
            "outside it, or in an ignored folder such as $CV_ASSETS_HOME"
        )
    if out.exists():
        raise ReleaseCliError(f"{out} exists: not overwritten")
    pub = write_key_pair(out)
    return f"private key {out} (mode 0600), public key {pub}: pin the public key in the app"


def _ignored(path: Path) -> bool:
    """Whether git ignores ``path`` in the repository (so it can never be committed)."""
    import subprocess

    r = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(path)],
                       capture_output=True, check=False)  # fmt: skip
    return r.returncode == 0


def _source(cfg: PlatformConfig, version: str) -> Any:
    from cv_assets.lib.mobile.releases import ReleaseSource
    from cv_assets.lib.tracking.registry import URI_TAGS
    from cv_assets.read_side import registry_for

    mv = registry_for(cfg).get(version)
    return ReleaseSource.from_mobile(mv.version, mv.imgsz or 0, mv.class_names, mv.mobile,
                                     URI_TAGS)  # fmt: skip


def _line(env: dict[str, Any] | None, channel: str) -> str:
    if env is None:
        return f"{channel}: nothing published"
    m = env["manifest"]
    files = ", ".join(f"{f['platform']}/{f['format']}" for f in m["files"])
    return (f"{channel}: v{m['model_version']} (sequence {m['sequence']}), rollout "
            f"{m['rollout_percent']}%, expires {m['expires_at']}, previous "
            f"{m.get('previous_version') or '-'}; files {files}")  # fmt: skip


def run(args: argparse.Namespace, cfg: PlatformConfig) -> int:
    from cv_assets.lib.mobile import channel as ch
    from cv_assets.lib.mobile import releases
    from cv_assets.read_side import open_store

    cmd = args.release_command
    try:
        if cmd == "keygen":
            print(keygen(args.out))
            return 0
        store, now = open_store(cfg), datetime.now(UTC)
        channels = [args.channel] if getattr(args, "channel", None) else list(ch.CHANNELS)
        if cmd == "show":
            found = {c: releases.current(store, c) for c in channels}
            if args.json:
                print(json.dumps(found, indent=1))
            for c, env in found.items():
                if not args.json:
                    print(_line(env, c))
            return 0
        key = releases.signing_key(cfg.release_key, cfg.release_key_file)
        ttl = timedelta(days=getattr(args, "ttl_days", 30))
        if cmd == "publish":
            env = releases.publish(
                store, key, args.channel, _source(cfg, args.version), now=now,
                rollout_percent=args.rollout, min_app_version=args.min_app_version, ttl=ttl,
            )  # fmt: skip
        elif cmd == "rollout":
            env = releases.reissue(store, key, args.channel, now=now, rollout_percent=args.percent)
        else:
            env = releases.reissue(store, key, args.channel, now=now, rollback=True)
    except (ReleaseCliError, releases.ReleaseError, ValueError) as e:
        print(f"cv-assets release {cmd}: {e}", file=sys.stderr)
        return 2
    print(_line(env, args.channel))
    print(f"manifest: {store.uri(releases.ROOT + ch.manifest_key(args.channel))}")
    return 0
