"""``annotation_round``: images of the unlabelled pool pushed to Label Studio for a person."""

import io
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from cv_assets.defs.common import OWNERS
from cv_assets.lib.annotation.labelstudio import LabelStudioError
from cv_assets.lib.annotation.proposals import histogram
from cv_assets.lib.annotation.records import AnnotationRound, PreAnnotations
from cv_assets.lib.annotation.rounds import new_round_id
from cv_assets.lib.annotation.start import (
    candidates,
    choose,
    label_issues,
    push_round,
    pushed_before,
)
from cv_assets.lib.core.report import md_table
from cv_assets.lib.dataset.records import TrainingDataset
from cv_assets.resources.labelstudio import LabelStudioResource
from cv_assets.resources.storage import ArtifactStoreResource, PlatformSettings


class AnnotationRoundConfig(dg.Config):
    k: int = Field(default=32, ge=1, le=5000, description="images a person labels in this round")
    spread: int = Field(
        default=4, ge=1, description="the k*spread most uncertain images are spread out to k"
    )
    label_issues: int = Field(
        default=8, ge=0, description="labelled images the review queues rank worst, to correct"
    )


@dg.asset(
    group_name="annotation",
    kinds={"labelstudio"},
    owners=OWNERS,
    code_version="1",
    ins={
        "pre_annotations": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
        "review_queue": dg.AssetIn(partition_mapping=dg.AllPartitionMapping()),
    },
)
def annotation_round(
    context: dg.AssetExecutionContext,
    config: AnnotationRoundConfig,
    pre_annotations: dict[str, PreAnnotations],
    review_queue: dict[str, dict[str, Any]],
    training_dataset: TrainingDataset,
    artifacts: ArtifactStoreResource,
    labelstudio: LabelStudioResource,
    settings: PlatformSettings,
) -> dg.MaterializeResult[AnnotationRound]:
    """k uncertain, diverse pool images and the worst label issues, pushed to Label Studio."""
    store = artifacts.store
    samples = store.get_bytes(store.key_of(training_dataset["samples"]["uri"]))
    labelled = set(pd.read_parquet(io.BytesIO(samples), columns=["sha256"])["sha256"])
    asked = pushed_before(store)
    pool, boxes = candidates(store, pre_annotations, labelled | asked)
    issues, label_boxes = label_issues(
        store, review_queue, asked, config.label_issues, settings.classes
    )
    picked = choose(store, pool, config.k, config.spread)
    chosen = pd.concat([picked, issues], ignore_index=True)
    boxes = pd.concat([boxes, label_boxes], ignore_index=True)
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
    hist = histogram(picked["uncertainty"])
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
            "uncertain_images": len(picked),
            "label_issues": len(issues),
            "candidates": len(pool),
            "label_studio": dg.MetadataValue.url(m["url"]),
            "uncertainty": dg.MetadataValue.md(md_table(hist, ["uncertainty", "images"])),
            "first_tasks": dg.MetadataValue.md(md_table(top, ["image", "batch", "uncertainty"])),
            "manifest": dg.MetadataValue.path(started.manifest_uri),
        },
    )
