#!/usr/bin/env bash
# Install the Debian packages qinyu uses (espeak-ng: synthetic speech for nano; sox:
# audio conversion; chromium: the web page's real-browser test) when they are missing. Needs root or sudo on a Debian machine.
set -euo pipefail
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
[ -x /usr/bin/chromium ] || [ -n "${QINYU_NO_BROWSER:-}" ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
