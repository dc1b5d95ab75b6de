#!/bin/sh
# Installs RadDraft from this unpacked archive (see README.md beside it):
#
#   sudo ./install.sh                   # app in /opt/raddraft, `raddraft` on PATH, desktop entry, systemd unit
#   sudo ./install.sh --enable-service  # ... and start the headless node now and at every boot
#   sudo ./install.sh --uninstall       # remove the app, its entry and its unit; keeps the store and settings
#
# --root DIR installs under DIR instead of / (packaging, tests): no user is created and systemd is not touched.
# Ends with `raddraft self-test`, which must pass.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=""
PREFIX=/opt/raddraft
ENABLE_SERVICE=0
UNINSTALL=0
SELF_TEST=1

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a folder}; shift ;;
        --prefix) PREFIX=${2:?--prefix needs a folder}; shift ;;
        --enable-service) ENABLE_SERVICE=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --no-self-test) SELF_TEST=0 ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown option $1" >&2; usage ;;
    esac
    shift
done

fail() { echo "install.sh: $*" >&2; exit 1; }
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    fail "run as root (sudo ./install.sh), or with --root DIR to install under DIR"
fi
SYSTEMD=0
if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    SYSTEMD=1
fi

APP="$ROOT$PREFIX"
BIN="$ROOT/usr/local/bin"
APPLICATIONS="$ROOT/usr/share/applications"
UNITS="$ROOT/etc/systemd/system"
CONFIG_DIR="$ROOT/etc/raddraft"
STATE_DIR="$ROOT/var/lib/raddraft"

if [ "$UNINSTALL" -eq 1 ]; then
    if [ "$SYSTEMD" -eq 1 ]; then
        systemctl disable --now raddraft.service 2>/dev/null || true
    fi
    rm -f "$UNITS/raddraft.service" "$APPLICATIONS/raddraft.desktop" "$BIN/raddraft"
    rm -rf "$APP"
    if [ "$SYSTEMD" -eq 1 ]; then
        systemctl daemon-reload
    fi
    echo "RadDraft removed; the store ($STATE_DIR) and the settings ($CONFIG_DIR) are kept."
    exit 0
fi

[ -x "$HERE/raddraft/raddraft" ] || fail "no raddraft/raddraft next to this script: unpack the whole archive first"

# The app: copied beside the old one, then swapped in, so a failed copy never leaves half an install.
mkdir -p "$(dirname "$APP")"
rm -rf "$APP.new"
cp -a "$HERE/raddraft" "$APP.new"
cp "$HERE/README.md" "$APP.new/README.md"
rm -rf "$APP.old"
[ -e "$APP" ] && mv "$APP" "$APP.old"
mv "$APP.new" "$APP"
rm -rf "$APP.old"

mkdir -p "$BIN"
ln -sf "$PREFIX/raddraft" "$BIN/raddraft"
mkdir -p "$APPLICATIONS"
sed "s#/opt/raddraft#$PREFIX#g" "$HERE/raddraft.desktop" > "$APPLICATIONS/raddraft.desktop"
chmod 644 "$APPLICATIONS/raddraft.desktop"

# The headless node: its own user, its settings in /etc/raddraft, its store in /var/lib/raddraft.
if [ -z "$ROOT" ] && ! id raddraft >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/raddraft --no-create-home --shell /usr/sbin/nologin raddraft
fi
mkdir -p "$CONFIG_DIR" "$STATE_DIR"
if [ ! -e "$CONFIG_DIR/raddraft.toml" ]; then
    cat > "$CONFIG_DIR/raddraft.toml" <<'TOML'
# Settings of the RadDraft node run by systemd (raddraft.service). Every key: installer/README.md and
# `raddraft service --help`. Restart the service after a change: systemctl restart raddraft
[node]
ae_title = "RADDRAFT"
host = "0.0.0.0"   # listen on every interface so PACS can reach the node
port = 11112

[store]
root = "/var/lib/raddraft/store"

[engine]
providers = []     # empty: the best this build offers (the GPU build uses CUDA when it can)
TOML
fi
mkdir -p "$UNITS"
sed "s#/opt/raddraft#$PREFIX#g" "$HERE/raddraft.service" > "$UNITS/raddraft.service"
chmod 644 "$UNITS/raddraft.service"
if [ -z "$ROOT" ]; then
    chown -R raddraft:raddraft "$STATE_DIR"
    chmod 770 "$STATE_DIR"
fi
if [ "$SYSTEMD" -eq 1 ]; then
    systemctl daemon-reload
    if [ "$ENABLE_SERVICE" -eq 1 ]; then
        systemctl enable --now raddraft.service
    fi
fi

if [ "$SELF_TEST" -eq 1 ]; then
    "$APP/raddraft" self-test || fail "the self-test failed: see its output above ($APP is installed)"
fi
echo "RadDraft installed in $APP ('raddraft' on PATH, 'RadDraft' in the applications menu)."
if [ "$ENABLE_SERVICE" -eq 0 ] && [ -z "$ROOT" ]; then
    echo "Start the headless node with: systemctl enable --now raddraft"
fi
