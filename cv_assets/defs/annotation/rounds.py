"""``annotation_round``: images of the unlabelled pool pushed to Label Studio for a person."""

import io
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from cv_assets.defs.common import OWNERS
from cv_assets.lib.annotation.labelstudio import LabelStudioError
from cv_assets.lib.annotation.proposals import histogram
from cv_assets.lib.annotation.records import AnnotationRound, PreAnnotations
from cv_assets.lib.annotation.rounds import new_round_id
from cv_assets.lib.annotation.start import candidates, choose, push_round, pushed_before
from cv_assets.lib.core.report import md_table
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.resources.labelstudio import LabelStudioResource
from cv_assets.resources.storage import ArtifactStoreResource, PlatformSettings


class AnnotationRoundConfig(dg.Config):
    k: int = Field(default=32, ge=1, le=5000, description="images a person labels in this round")
    spread: int = Field(
        default=4, ge=1, description="the k*spread most uncertain images are spread out to k"
    )


@dg.asset(
    group_name="annotation",
    kinds={"labelstudio"},
    owners=OWNERS,
    code_version="1",
    ins={"pre_annotations": dg.AssetIn(partition_mapping=dg.AllPartitionMapping())},
)
def annotation_round(
    context: dg.AssetExecutionContext,
    config: AnnotationRoundConfig,
    pre_annotations: dict[str, PreAnnotations],
    training_dataset: TrainingDataset,
    artifacts: ArtifactStoreResource,
    labelstudio: LabelStudioResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult[AnnotationRound]:
    """k uncertain, diverse pool images pushed to Label Studio with the champion's boxes."""
    store = artifacts.store
    samples = store.get_bytes(store.key_of(training_dataset["samples"]["uri"]))
    labelled = pd.read_parquet(io.BytesIO(samples), columns=["sha256"])
    pool, boxes = candidates(store, pre_annotations, set(labelled["sha256"]) | pushed_before(store))
    chosen = choose(store, pool, config.k, config.spread)
    if chosen.empty:
        raise dg.Failure(description="nothing to label: every pre-annotated image is labelled or "
                         "was pushed by an earlier round")  # fmt: skip
    versions = sorted({str(r["champion_version"]) for r in pre_annotations.values()})
    now = datetime.now(UTC)
    rid = new_round_id(now)
    try:
        started = push_round(
            labelstudio.client(), store, rid, labelstudio.round_folder(rid), chosen, boxes,
            settings.classes, f"champion-v{'+v'.join(versions)}", now.isoformat(),
        )  # fmt: skip
    except LabelStudioError as e:
        raise dg.Failure(description=f"{rid} was not started: {e}") from None
    m = started.manifest
    context.log.info(f"{rid}: {len(chosen)} tasks in Label Studio project {m['project']}")
    hist = histogram(chosen["uncertainty"])
    head = chosen.head(10)
    cols = zip(head["stem"], head["batch_id"], head["uncertainty"], strict=True)
    top = [(s, b, round(float(u), 3)) for s, b, u in cols]
    record: AnnotationRound = {
        "round_id": rid, "project": int(m["project"]), "url": m["url"], "pushed": len(chosen),
        "champion_version": m["model_version"], "manifest": started.manifest_uri,
    }  # fmt: skip
    return dg.MaterializeResult(
        value=record,
        metadata={
            "round_id": rid,
            "pushed": len(chosen),
            "candidates": len(pool),
            "label_studio": dg.MetadataValue.url(m["url"]),
            "uncertainty": dg.MetadataValue.md(md_table(hist, ["uncertainty", "images"])),
            "first_tasks": dg.MetadataValue.md(md_table(top, ["image", "batch", "uncertainty"])),
            "manifest": dg.MetadataValue.path(started.manifest_uri),
        },
    )
