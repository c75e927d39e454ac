"""``make demo``: the closed loop, driven only by the real Dagster daemon.

Nothing here calls an asset function or launches a job. The demo writes batches to the landing
zone and watches the instance while ``dagster dev`` (webserver + daemon) does the rest:

1. ``landing_sensor`` turns the initial batches into partitions and intake runs;
2. the volume condition on ``training_dataset`` sees enough new accepted images and retrains:
   champion v1 and its mobile files appear;
3. a brightness-shifted batch lands; intake, then ``drift_report`` flags it;
4. ``drift_sensor`` requests a retraining on its own (a warm start from v1);
5. meanwhile yesterday's traffic of a simulated fleet running v1 reaches the telemetry service;
   ``field_day_sensor`` judges the day: the darker cohort is flagged, its low-confidence frames
   land in the unlabelled pool, and a simulated person labels the random audit frames, on which
   the live accuracy is reported;
6. v2 is gated against v1 on the same test split (and in shadow on the newest batches), and is
   promoted or rejected with its reasons;
7. a summary says what happened and where to look;
8. the champion is on the signed ``beta`` channel, and the reference client fetches it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cv_assets.dev.fleet import label_audit, rejected_summary, send_day
from cv_assets.dev.home import REPO, prepare_home
from cv_assets.dev.procs import stop_group
from cv_assets.dev.release_check import demo_key, fetch_beta
from cv_assets.lib.core.settings import PlatformConfig
from cv_assets.read_side import latest_by_partition, latest_metadata, metadata_of, open_instance

TIMEOUT_S = int(os.environ.get("DEMO_TIMEOUT_S", "2400"))
# Sized to train within ~10 CPU-minutes on 2 cores; the README explains the choice.
BATCHES, IMAGES, SIZE = 5, 128, 320
# The demo trains with the product's defaults, the measured recipe (README, "Training settings"):
# what a team that sets nothing gets. DEMO_EPOCHS shortens it for a quick look.
TRAIN = {"epochs": int(os.environ["DEMO_EPOCHS"])} if os.environ.get("DEMO_EPOCHS") else {}
# A retraining on an event fine-tunes the champion instead of starting over: minutes, not ten.
ON_EVENT = {"warm_start": True, "epochs": int(os.environ.get("DEMO_EVENT_EPOCHS", "6"))}
SHIFT = "brightness=0.25"
AUTOMATION = {
    **({"CV_ASSETS_TRAIN": json.dumps(TRAIN)} if TRAIN else {}),
    "CV_ASSETS_TRAIN_ON_EVENT": json.dumps(ON_EVENT),
    # The initial ~600 images cross N; the shifted batch alone (~128) does not: drift must act.
    "CV_ASSETS_RETRAIN_MIN_IMAGES": "300",
    # Longer than the field day takes to be judged after v2 starts (about 3 min), shorter than
    # v1's training (about 10): the field's drift shares v2's retraining instead of a third.
    "CV_ASSETS_RETRAIN_COOLDOWN_S": "420",
    "CV_ASSETS_FIELD_SETTLE_S": "0",  # yesterday is judged at once, not 30 min after midnight
    "CV_ASSETS_SENSOR_INTERVAL": "5",
}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cv_assets.cli", *args], env=env, check=True)


def _synth(env: dict[str, str], seed: int, batches: int, *extra: str) -> None:
    args = ["--batches", str(batches), "--images-per-batch", str(IMAGES), "--size", str(SIZE)]
    _cli(env, "synth", *args, "--seed", str(seed), *extra)


def _complete(landing: Path) -> set[str]:
    return {p.name for p in landing.iterdir() if (p / "batch.json").exists()}


class Watch:
    """Read-only views of the instance that dagster dev is writing."""

    def __init__(self, cfg: PlatformConfig) -> None:
        self.instance = open_instance(cfg)

    def validated(self) -> set[str]:
        return set(latest_by_partition(self.instance, "validated_batch"))

    def runs(self, trigger: str):
        import dagster as dg

        flt = dg.RunsFilter(tags={"cv_assets/trigger": trigger})
        return self.instance.get_runs(flt)

    def finished(self, trigger: str) -> str | None:
        runs = self.runs(trigger)
        return runs[0].status.value if runs and runs[0].status.value in TERMINAL else None

    def latest(self, asset: str, partition: str | None = None) -> dict | None:
        return latest_metadata(self.instance, asset, partition)

    def skip_reason(self, sensor: str, about: str) -> str | None:
        """What the sensor's newest skipped tick said about ``about`` (a partition), if any."""
        from dagster._core.scheduler.instigation import InstigatorType, TickStatus

        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name != sensor:
                continue
            origin, selector = state.instigator_origin_id, state.selector_id
            for t in self.instance.get_ticks(origin, selector, limit=500):
                if t.status == TickStatus.SKIPPED and about in (t.skip_reason or ""):
                    return t.skip_reason
        return None

    def since(self, t: float, asset: str, partition: str | None = None) -> dict | None:
        """The newest materialization of ``asset`` after ``t`` (a home may hold older ones)."""
        import dagster as dg

        flt = dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset),
            asset_partitions=[partition] if partition is not None else None,
            after_timestamp=t,
        )
        recs = self.instance.fetch_materializations(flt, limit=1).records
        mat = recs[0].asset_materialization if recs else None
        return metadata_of(mat) if mat is not None else None


def _wait(what: str, done, proc: subprocess.Popen, deadline: float) -> bool:
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print("dagster dev exited early; see its log", file=sys.stderr)
            return False
        if done():
            print(f"   ... {what}: {time.monotonic() - t0:.0f}s")
            return True
        time.sleep(3)
    print(f"timed out waiting for {what}", file=sys.stderr)
    return False


def _start(cfg: PlatformConfig, env: dict[str, str], port: str) -> subprocess.Popen:
    log = open(cfg.home / "dagster-dev.log", "ab")  # noqa: SIM115 - lives as long as the server
    print(f"== starting dagster dev on http://127.0.0.1:{port} (log: {log.name})")
    cmd = ["dev", "-h", "127.0.0.1", "-p", port, "-w", str(REPO / "workspace.yaml")]
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", *cmd],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc, signal.SIGINT)
    print("== stopped dagster dev")


def _loop(cfg: PlatformConfig, env: dict[str, str], proc, port: str, seed: int) -> int:
    w, landing, deadline = Watch(cfg), Path(cfg.landing_root), time.monotonic() + TIMEOUT_S
    initial = _complete(landing)
    ui = f"http://127.0.0.1:{port}"
    print("== 1. waiting for landing_sensor and intake of the initial batches")
    if not _wait("intake", lambda: initial <= w.validated(), proc, deadline):
        return 1
    print("== 2. waiting for the volume trigger to retrain (no job is launched by this script)")
    if not _wait("retraining v1", lambda: w.finished("automation"), proc, deadline):
        return 1
    champ = w.latest("champion_model")
    if w.finished("automation") != "SUCCESS" or not champ:
        print(f"the automatic training did not succeed: see {ui}/runs", file=sys.stderr)
        return 1
    print(f"   champion v{champ['version']}: mAP50 {float(champ['map50']):.3f}")
    print(f"== 3. landing a shifted batch ({SHIFT})")
    _synth(env, seed + 2, 1, "--shift", SHIFT)
    (shifted,) = _complete(landing) - initial
    if not _wait("drift report", lambda: w.latest("drift_report", shifted), proc, deadline):
        return 1
    drift = w.latest("drift_report", shifted) or {}
    print(
        f"   drift share {float(drift['drift_share']):.2f}, drifted={drift['drifted']} "
        f"({drift['drifted_columns']})"
    )
    if not drift.get("drifted"):
        print("   not flagged: no retraining on drift this time")
        return _summary(cfg, w, env, ui, shifted)
    print("== 4. waiting for drift_sensor's retraining (warm start from the champion)")
    if not _wait("retraining v2 requested", lambda: bool(w.runs("drift")), proc, deadline):
        return 1
    if not _field(cfg, env, w, proc, deadline, seed):
        return 1
    print("== 4. (cont.) waiting for the retraining v2 to finish")
    if not _wait("retraining v2", lambda: w.finished("drift"), proc, deadline):
        return 1
    return _summary(cfg, w, env, ui, shifted)


def _field(
    cfg: PlatformConfig, env: dict[str, str], w: Watch, proc, deadline: float, seed: int
) -> bool:
    print("== 5. yesterday's traffic of the apps comes back (a simulated fleet running v1)")
    t0 = time.time()
    fleet = send_day(cfg, env, seed)
    print(
        f"   {fleet.sent} events of {fleet.day} posted to the telemetry service: "
        f"{fleet.accepted} accepted, {len(fleet.rejected)} rejected "
        f"({rejected_summary(fleet.rejected)})"
    )
    day = fleet.day
    if not _wait("field_drift", lambda: w.since(t0, "field_samples", day), proc, deadline):
        return False
    drift = w.latest("field_drift", fleet.day) or {}
    print(f"   field drift, {drift.get('n_events')} events: flagged {drift.get('drifted_cohorts')}")
    samples = w.latest("field_samples", fleet.day) or {}
    batch = str(samples.get("field_batch", "-"))
    print(
        f"   {samples.get('low_confidence_frames')} low-confidence frames landed as {batch}, "
        f"{samples.get('audit_frames')} random frames in the audit set"
    )
    if batch != "-":
        if not _wait("intake of the field frames", lambda: batch in w.validated(), proc, deadline):
            return False
        v = w.latest("validated_batch", batch) or {}
        print(f"   in the unlabelled pool: {v.get('unlabelled')} of {v.get('landed')} frames")
    t1 = time.time()
    labelled = label_audit(cfg, env, fleet.truth)
    print(f"   a person labelled {len(labelled)} audit frames (cv-assets audit export / import)")
    if not _wait("live accuracy", lambda: w.since(t1, "field_accuracy"), proc, deadline):
        return False
    acc = w.since(t1, "field_accuracy") or {}
    print(str(acc.get("live_map50", "")).strip())
    print(f"   cohorts too small for their own interval: {acc.get('cohorts_too_small')}")
    retrains = w.runs("field_drift")
    if retrains:
        print(f"   field_drift_sensor requested retraining run {retrains[0].run_id[:8]}")
    else:
        said = w.skip_reason("field_drift_sensor", fleet.day)
        print(f"   field_drift_sensor: {said or 'has not judged the day yet'}")
    return True


def _summary(cfg: PlatformConfig, w: Watch, env: dict[str, str], ui: str, shifted: str) -> int:
    ev = w.latest("model_evaluation") or {}
    champ = w.latest("champion_model") or {}
    drift = w.latest("drift_report", shifted) or {}
    print("\n== 6. the gate on the last challenger (same test split as the champion)")
    print(str(ev.get("gate", "")).strip())
    print(str(ev.get("shadow", "")).strip())
    print(str(ev.get("class_changes", "")).strip())
    sizes = ", ".join(f"{k[3:]} {ev[k]}" for k in ("ap_small", "ap_medium", "ap_large") if k in ev)
    print(f"   challenger AP50-95 by object size (model-input pixels): {sizes or 'n/a'}")
    print(f"   champion now: v{champ.get('version')} ({champ.get('action', '')})")
    print("\n== 7. summary")
    _cli(env, "status")
    image = next(iter(sorted((Path(cfg.landing_root) / shifted / "images").glob("*.jpg"))))
    print(f"\n== cv-assets predict --model champion {image.name}")
    _cli(env, "predict", "--model", "champion", str(image))
    print(
        f"\nWhere to look:\n"
        f"  lineage and automation   {ui}/asset-groups  (make ui)\n"
        f"  why it retrained         {ui}/automation\n"
        f"  runs                     {ui}/runs\n"
        f"  drift report ({shifted})  {drift.get('report', '-')}\n"
        f"  MLflow                   make mlflow-ui -> http://127.0.0.1:5000\n"
        f"  app files                {cfg.artifacts_root}/mobile/"
    )
    return 0


def main() -> int:
    cfg = PlatformConfig.from_env()
    env = AUTOMATION | prepare_home(cfg)  # what the user exported wins
    port = env.get("UI_PORT", "3000")
    key = demo_key(cfg, env)  # app_release signs the champion's beta manifest with it
    seed = int(time.time()) % 100_000  # each demo run lands new, different batches
    print(f"== cv_assets demo in {cfg.home}")
    _synth(env, seed, BATCHES - 2)
    # One batch as an annotation tool exports it (COCO, class ids in its own order), one with
    # faults to quarantine, and unlabelled frames from the field for the unlabelled pool.
    _synth(env, seed, 1, "--format", "coco")
    _synth(env, seed + 1, 1, "--corrupt-fraction", "0.2", "--quirk-fraction", "0.1")
    _synth(env, seed + 3, 1, "--unlabelled-fraction", "1", "--images-per-batch", "32",
           "--prefix", "field")  # fmt: skip
    print(f"== landed {len(_complete(Path(cfg.landing_root)))} batches")
    proc = _start(cfg, env, port)
    t0 = time.monotonic()
    try:
        code = _loop(cfg, env, proc, port, seed)
        print("\n== 8. the app's release channel (cv-assets release show)")
        _cli(env, "release", "show")
        print(fetch_beta(cfg, key))
        return code
    finally:
        _stop(proc)
        print(f"== demo loop took {(time.monotonic() - t0) / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
