"""``app_release``: the champion's app files under a signed manifest that apps fetch."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from cv_assets.defs.automation.conditions import downstream_condition
from cv_assets.defs.common import OWNERS
from cv_assets.lib.core.report import md_table
from cv_assets.lib.mobile import releases
from cv_assets.lib.mobile.channel import manifest_key
from cv_assets.lib.tracking.registry import URI_TAGS
from cv_assets.lib.training.records import ChampionModel
from cv_assets.resources.release import ReleaseSigningResource
from cv_assets.resources.storage import ArtifactStoreResource


@dg.asset(
    group_name="mobile",
    kinds={"json"},
    owners=OWNERS,
    code_version="1",
    output_required=False,
    automation_condition=downstream_condition(),
)
def app_release(
    context: dg.AssetExecutionContext,
    champion_model: ChampionModel,
    artifacts: ArtifactStoreResource,
    release: ReleaseSigningResource,
) -> Iterator[dg.Output[dict[str, Any]]]:
    """The champion on the beta channel (stable too when set): a signed manifest apps fetch."""
    version = champion_model.get("version")
    if not version:
        context.log.info("no champion: nothing to release")
        return
    if not release.configured:
        # Not a failure of the training run: publishing is refused, and the log says how.
        context.log.warning(f"not published: {_why_not()}")
        return
    store, now = artifacts.store, datetime.now(UTC)
    src = releases.ReleaseSource.from_mobile(
        version, int(champion_model.get("imgsz") or 0), champion_model.get("class_names", []),
        champion_model.get("mobile") or {}, URI_TAGS,
    )  # fmt: skip
    channels = ["beta"] + (["stable"] if release.stable == "auto" else [])
    key, published = release.key(), {}
    for channel in channels:
        now_on = releases.current(store, channel)
        if now_on and now_on["manifest"]["model_version"] == src.version:
            published[channel] = now_on["manifest"]  # already there: not re-signed
            continue
        published[channel] = releases.publish(store, key, channel, src, now=now)["manifest"]
    context.log.info(f"v{src.version} on {', '.join(published)}")
    yield dg.Output(
        {"model_version": src.version, "channels": published},
        metadata=_metadata(store, src.version, published, channels),
    )


def _metadata(
    store: Any, version: str, published: dict[str, Any], channels: list[str]
) -> dict[str, Any]:
    """The files of the beta manifest, and each channel's last ten manifests, for the UI."""
    beta = published["beta"]
    files = [(f["platform"], f["format"], f["size"], f["sha256"][:16]) for f in beta["files"]]
    rows = [
        (c, m["sequence"], m["model_version"], m["rollout_percent"], m["expires_at"])
        for c in channels
        for m in releases.history(store, c)[-10:]
    ]
    return {
        "model_version": version,
        "channels": ", ".join(published),
        "beta_sequence": beta["sequence"],
        "files": dg.MetadataValue.md(md_table(files, ["platform", "format", "bytes", "sha256"])),
        "not_shipped": beta.get("notes") or "none",
        "manifest": dg.MetadataValue.path(store.uri(releases.ROOT + manifest_key("beta"))),
        "history": dg.MetadataValue.md(
            md_table(rows, ["channel", "sequence", "version", "rollout %", "expires"])
        ),
    }


def _why_not() -> str:
    try:
        releases.signing_key(None, None)
    except releases.ReleaseError as e:
        return str(e)
    return ""
