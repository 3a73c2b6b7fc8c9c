#!/usr/bin/env bash
# Installs what the browser test of `genie play --serve` needs: Debian's headless Chromium with its
# WebDriver (/usr/bin/chromium, /usr/bin/chromedriver) and selenium in the virtual environment.
# Idempotent: does nothing that is already done. Usage: tests/install_browser.sh [PYTHON]
set -euo pipefail
PY="${1:-.venv/bin/python}"

if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver
fi

if ! "$PY" -c "import selenium" 2>/dev/null; then
    "$PY" -m pip install --quiet "selenium>=4.10"
fi
