#!/bin/sh
# Install the Debian packages ngx_wa needs to build, test and run, when any
# is missing (and those of the extras named: bench, valgrind, fuzz, alerts,
# deb).
# Idempotent: prints nothing and touches nothing when all are in.
set -eu

PKGS="gcc make perl nginx-core nginx-dev libssl-dev libcurl4-openssl-dev
      libcjson-dev libpq-dev postgresql-15 libdbd-pg-perl
      openssl libnss-wrapper"

# extras for the targets that are not make run / make test
for extra in "$@"; do
    case "$extra" in
    bench)    PKGS="$PKGS wrk python3-flask gunicorn python3-psycopg2" ;;
    valgrind) PKGS="$PKGS valgrind" ;;
    fuzz)     PKGS="$PKGS clang" ;;
    # promtool, for t/63's check of conf/wa-alerts.yml (the package also
    # brings a Prometheus server, which is why it is not a default)
    alerts)   PKGS="$PKGS prometheus" ;;
    # make deb: Debian's packaging tools (dpkg-buildpackage wants
    # build-essential), and lintian to check what they built
    deb)      PKGS="$PKGS build-essential debhelper dpkg-dev lintian" ;;
    *)        echo "deps.sh: unknown extra \"$extra\"" >&2; exit 2 ;;
    esac
done

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "ngx_wa: missing packages:$missing" >&2
    echo "ngx_wa: run as root, or: sudo apt-get install$missing" >&2
    exit 1
fi

echo "ngx_wa: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null

# the package starts a system nginx on port 80; ours runs on its own ports
if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q nginx 2>/dev/null; then
    systemctl stop nginx || true
fi
