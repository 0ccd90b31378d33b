#!/usr/bin/env bash
# One command installs framewatch and everything its tests need on a Debian/Ubuntu box:
#   ./install.sh            # system packages (when root), .venv, framewatch with dev extras
# FRAMEWATCH_NO_APT=1 skips the system packages; PYTHON picks the interpreter (3.11+).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
# Tests of several boxes talk to Redis and PostgreSQL; .ci/run starts the servers when down.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
# The mqtt plugin's tests start their own Mosquitto broker (and use mosquitto_passwd).
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
# The web plugin's browser test drives Debian's Chromium with Playwright (never a downloaded one).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
# Tests only: the chapter tests feed the subtitles plugin's Matroska chapter XML to mkvmerge.
command -v mkvmerge >/dev/null 2>&1 || need_apt+=(mkvtoolnix)
# Tests only: the speech tests make their speech with espeak-ng (framewatch never runs it).
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if [ "${#need_apt[@]}" -gt 0 ] && [ -z "${FRAMEWATCH_NO_APT:-}" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    else
        echo "install.sh: please install: ${need_apt[*]} (e.g. sudo apt-get install ${need_apt[*]})" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision pinned in pyproject.toml; everything else resolves from PyPI.
.venv/bin/python -m pip install -q -e '.[dev]'
# An editable install leaves our own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is set
# every command would compile them again (about 0.07 s of each start here); pip compiles a wheel's.
.venv/bin/python -m compileall -q daemon plugins >/dev/null
.venv/bin/framewatch --version
