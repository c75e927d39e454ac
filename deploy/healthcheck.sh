#!/bin/sh
# Health of one container of the cv_assets image, by the role it plays (CV_ASSETS_ROLE).
# The image's HEALTHCHECK and the ECS task definitions call it. A container without a role
# (a run worker, a one-off command) is healthy while it runs.
set -eu

http_ok() {
    python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1"
}

case "${CV_ASSETS_ROLE:-}" in
    webserver) http_ok "http://127.0.0.1:${CV_ASSETS_UI_PORT:-3000}/server_info" ;;
    code-server) dagster api grpc-health-check -p "${CV_ASSETS_GRPC_PORT:-4000}" ;;
    daemon) dagster-daemon liveness-check ;;
    mlflow) http_ok "http://127.0.0.1:${CV_ASSETS_MLFLOW_PORT:-5000}/health" ;;
    "") exit 0 ;;
    *)
        echo "CV_ASSETS_ROLE=${CV_ASSETS_ROLE}: expected webserver, code-server, daemon or mlflow" >&2
        exit 1
        ;;
esac
