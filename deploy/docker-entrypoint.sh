#!/bin/sh
# Entry point of the cv_assets image: installs the chosen Dagster instance config, then runs the
# command it was given (webserver, daemon, code server, a run worker, mlflow, cv-assets ...).
#
#   CV_ASSETS_INSTANCE=postgres  compose / one host: Postgres, S3 compute logs, runs in the code server
#   CV_ASSETS_INSTANCE=ecs       Amazon ECS: the same plus one ECS task per run
#   unset                        leave $DAGSTER_HOME alone (Kubernetes mounts the Helm chart's file)
set -eu

if [ -n "${CV_ASSETS_INSTANCE:-}" ]; then
    src="${CV_ASSETS_INSTANCE_DIR:-/opt/cv_assets/instance}/dagster.${CV_ASSETS_INSTANCE}.yaml"
    if [ ! -f "$src" ]; then
        echo "CV_ASSETS_INSTANCE=${CV_ASSETS_INSTANCE}: no $src in this image (expected postgres or ecs)" >&2
        exit 64
    fi
    mkdir -p "$DAGSTER_HOME"
    cp "$src" "$DAGSTER_HOME/dagster.yaml"
fi

exec "$@"
