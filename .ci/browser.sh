#!/usr/bin/env bash
# The browser test (cv_assets_tests/ui) drives Debian's Chromium headless through Playwright.
# Playwright never downloads a browser here (CI has no internet beyond the package mirrors), so
# the system Chromium (and a font for legible screenshots) is installed once; a second call is a
# no-op.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
command -v chromium
