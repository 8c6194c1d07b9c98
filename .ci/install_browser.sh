#!/usr/bin/env bash
# Installs the headless browser that tests/test_report_browser.py drives, on a fresh Debian machine, as root.
# Idempotent: does nothing when /usr/bin/chromium is already there. Only Debian's packages are used; the
# playwright Python package (declared in setup.py) drives this Chromium, so `playwright install` is never needed.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  echo "install_browser: /usr/bin/chromium already present: $(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown')"
  exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
  echo "install_browser: must run as root to apt-get install chromium" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium chromium-driver

if [[ ! -x /usr/bin/chromium ]]; then
  echo "install_browser: apt-get finished but /usr/bin/chromium is missing" >&2
  exit 1
fi
echo "install_browser: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
