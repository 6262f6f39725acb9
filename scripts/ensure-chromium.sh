#!/usr/bin/env bash
# Headless Chromium for the report's rendering test (tests/test_report.py): Debian's `chromium`
# package. Installs it when missing and this runs as root; otherwise says what to run, and fails.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing: installing Debian's chromium package (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
    command -v chromium >/dev/null 2>&1 && exit 0
    echo "apt-get installed chromium but no \`chromium\` command is on PATH" >&2
    exit 1
fi
echo "chromium is missing; the report test needs Debian's chromium package:" >&2
echo "    sudo apt-get update && sudo apt-get install -y chromium" >&2
exit 1
