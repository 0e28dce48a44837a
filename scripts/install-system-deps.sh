#!/usr/bin/env bash
# Install the Debian packages qinyu uses when they are missing: espeak-ng (synthetic speech
# for nano) and sox (audio conversion) are required; chromium (the web page's real-browser
# test) is installed too unless QINYU_NO_BROWSER is set, and its failure only warns (the
# browser test then skips, saying why). Needs root or sudo on a Debian machine.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
updated=""
apt_install() {
    [ -n "$updated" ] || { $SUDO apt-get update -qq; updated=1; }
    $SUDO apt-get install -y -qq "$@" >/dev/null
}

required=()
command -v espeak-ng >/dev/null 2>&1 || required+=(espeak-ng)
command -v sox >/dev/null 2>&1 || required+=(sox)
if [ ${#required[@]} -gt 0 ]; then
    echo "installing Debian packages: ${required[*]}"
    apt_install "${required[@]}"
fi

if [ ! -x /usr/bin/chromium ] && [ -z "${QINYU_NO_BROWSER:-}" ]; then
    echo "installing Debian package: chromium (for the web page's browser test)"
    apt_install chromium || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
