#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests, which drive it through Playwright.
#
#   scripts/ensure-chromium.sh
#
# The tests launch the system browser at ETLB_CHROMIUM (default /usr/bin/chromium); Playwright's own
# browser downloads are never used.
#
# - Chromium present: nothing to do.
# - Chromium missing: installed from Debian's chromium package when running as root with apt-get.
# - Chromium missing and not installable: with CI=true this is an error (exit 1). Otherwise the script
#   prints the reason and exits 0, and the browser tests are skipped with the reason.
set -euo pipefail

chromium="${ETLB_CHROMIUM:-/usr/bin/chromium}"

log() {
    echo "ensure-chromium: $*" >&2
}

if [[ -x "$chromium" ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "$chromium is missing; installing Debian's chromium package"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
        if [[ -x "$chromium" ]]; then
            log "$("$chromium" --version 2>/dev/null || echo chromium) is installed at $chromium"
            exit 0
        fi
        log "the chromium package installed, but $chromium is still missing; set ETLB_CHROMIUM to its path"
    else
        log "apt-get could not install chromium"
    fi
fi

if [[ "${CI:-}" == "true" ]]; then
    log "Chromium is not installed at $chromium and could not be installed; CI needs it for the browser tests"
    exit 1
fi
log "Chromium is not installed at $chromium (apt-get install chromium as root); the browser tests will be skipped"
exit 0
