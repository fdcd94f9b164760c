#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian packages) for the web page's browser test.
# Idempotent and quiet: does nothing when both are already present.
#   bash scripts/install_browser.sh
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
echo "installed $(chromium --version 2>/dev/null || echo chromium) and /usr/bin/chromedriver"
