#!/usr/bin/env bash
# Installs qwen-edge as a hardened systemd service on Debian / Raspberry Pi OS (arm64, x64).
# Idempotent: run it again to upgrade; an existing /etc/qwen-edge/config.yaml is never touched.
# See docs/INSTALL-PI.md. `deploy/install.sh --help` for the options.
set -euo pipefail
# Files must be readable by the service's dynamic user, whatever root's umask is.
umask 022

PREFIX=/opt/qwen-edge
DESTDIR=${DESTDIR:-}
ACTION=install
PURGE=0
RUN_NPM=1
ENABLE=1
SERVICE=qwen-edge
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    cat <<'EOF'
Usage: sudo deploy/install.sh [options]

Installs qwen-edge from this checkout (or unpacked package) into a prefix, installs its
production dependencies there with `npm ci --omit=dev`, writes /etc/qwen-edge/config.yaml from
the example when it does not exist yet, installs systemd/qwen-edge.service and enables it.
The checkout must be built first (`npm ci && npm run build`, as your user, not root).

Options:
  --prefix DIR     where the program goes (default /opt/qwen-edge)
  --uninstall      stop and disable the service, remove the program and the unit;
                   keeps /etc/qwen-edge and the service's state and model cache
  --purge          with --uninstall: also remove /etc/qwen-edge, the job journal and the models
  --skip-npm       do not run `npm ci` in the prefix (for tests; the program will not run)
  --no-enable      install the unit but do not enable it
  -h, --help       this help

Environment:
  DESTDIR          install below this directory instead of /, touching nothing outside it;
                   systemctl is not called (for packaging and tests; root is not needed)

After installing: put the broker password (if any) in /etc/qwen-edge/mqtt-password (mode 0600),
set model.path and mqtt.url in /etc/qwen-edge/config.yaml, then `sudo systemctl start qwen-edge`.
EOF
}

say() { printf 'qwen-edge install: %s\n' "$*"; }
warn() { printf 'qwen-edge install: warning: %s\n' "$*" >&2; }
die() {
    printf 'qwen-edge install: error: %s\n' "$*" >&2
    # A half-built upgrade is of no use; the installed version stays as it was.
    if [ -n "${STAGE:-}" ] && [ -f "$STAGE/$MARKER" ]; then rm -rf "$STAGE"; fi
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        --skip-npm) RUN_NPM=0; shift ;;
        --no-enable) ENABLE=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

case "$PREFIX" in
    /*) ;;
    *) die "--prefix must be an absolute path (got '$PREFIX')" ;;
esac
PREFIX=${PREFIX%/}
case "$PREFIX" in
    ""|/|/usr|/usr/local|/opt|/etc|/var|/home|/root|/bin|/sbin|/lib) die "refusing to use '$PREFIX' as the prefix: it is not a directory of its own" ;;
esac
[ -z "$DESTDIR" ] || DESTDIR=$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)

ROOT="$DESTDIR$PREFIX"
CONFDIR="$DESTDIR/etc/qwen-edge"
UNIT="$DESTDIR/etc/systemd/system/$SERVICE.service"
BINLINK="$DESTDIR/usr/local/bin/qwen-edge"
MARKER=".qwen-edge-install"
# Upgrades are built here next to the prefix and swapped in only once complete: a failed
# `npm ci` or an unloadable binary leaves the installed (maybe running) version untouched.
STAGE="$ROOT.new"

# systemctl only on a real system booted with systemd; never for a DESTDIR staging install.
systemd_usable() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

need_root() {
    if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
        die "writing to /etc and $PREFIX needs root: run it with sudo (or set DESTDIR to stage the files)"
    fi
}

# Only ever delete a directory this script made: the marker file says so.
remove_ours() {
    if [ -d "$1" ]; then
        [ -f "$1/$MARKER" ] || die "$1 exists but was not made by this installer (no $MARKER): not removing it"
        rm -rf "$1"
    fi
}

uninstall() {
    need_root
    if systemd_usable; then
        systemctl disable --now "$SERVICE" 2>/dev/null || true
    fi
    rm -f "$UNIT"
    if systemd_usable; then systemctl daemon-reload; fi
    if [ "$(readlink "$BINLINK" 2>/dev/null)" = "$PREFIX/bin/qwen-edge" ]; then rm -f "$BINLINK"; fi
    remove_ours "$ROOT"
    remove_ours "$STAGE"
    say "removed $PREFIX and the unit $SERVICE.service"
    if [ "$PURGE" -eq 1 ]; then
        rm -rf "$CONFDIR" "$DESTDIR/var/lib/qwen-edge" "$DESTDIR/var/lib/private/qwen-edge" \
            "$DESTDIR/var/cache/qwen-edge" "$DESTDIR/var/cache/private/qwen-edge"
        say "purged /etc/qwen-edge, the job journal and the model cache"
    else
        say "kept /etc/qwen-edge (configuration, password) and /var/lib/qwen-edge, /var/cache/qwen-edge (journal, models); --purge removes them"
    fi
}

check_platform() {
    local arch
    arch=$(uname -m)
    case "$arch" in
        aarch64|arm64|x86_64|amd64) ;;
        armv7l) warn "32-bit ARM (armv7l): llama.cpp's prebuilt binary exists but only the smallest models fit a 32-bit process; a 64-bit OS (Raspberry Pi OS 64-bit) is strongly recommended" ;;
        *) die "unsupported architecture '$arch': qwen-edge needs arm64 (aarch64) or x64 (armv7l works with a warning)" ;;
    esac
    command -v node >/dev/null 2>&1 || die "Node.js is not installed (or not on root's PATH, as with nvm: install it system-wide). Node 20 or newer is needed (Debian 12's own nodejs is 18): see docs/INSTALL-PI.md, e.g. NodeSource's node_20.x repository"
    local node_major
    node_major=$(node -p 'process.versions.node.split(".")[0]')
    [ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old: qwen-edge needs Node 20 or newer (see docs/INSTALL-PI.md)"
    if [ "$RUN_NPM" -eq 1 ]; then
        command -v npm >/dev/null 2>&1 || die "npm is not installed (it comes with Node.js from NodeSource; on Debian: apt-get install npm)"
    fi
    # llama.cpp's prebuilt binaries need glibc 2.34+ (Debian 12 / Pi OS Bookworm have 2.36).
    local glibc
    glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}') || true
    if [ -n "$glibc" ] && [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -n1)" != "2.34" ]; then
        warn "glibc $glibc is older than 2.34: llama.cpp's prebuilt binaries will not load (use Debian 12 / Raspberry Pi OS Bookworm)"
    fi
    [ -f "$SOURCE/dist/src/launcher.cjs" ] || die "$SOURCE/dist/src/launcher.cjs is missing: build first, as your user: cd $SOURCE && npm ci && npm run build"
    if [ -d "$SOURCE/src" ] && [ -n "$(find "$SOURCE/src" -name '*.ts' -newer "$SOURCE/dist/src/main.js" -print -quit)" ]; then
        warn "some files in src/ are newer than dist/: run 'npm run build' first if you changed the code"
    fi
}

copy_program() {
    # A fresh tree each time, so files removed upstream do not linger; node_modules is rebuilt by npm ci.
    remove_ours "$STAGE"
    if [ -d "$ROOT" ] && [ ! -f "$ROOT/$MARKER" ]; then
        die "$ROOT exists but was not made by this installer (no $MARKER): not replacing it"
    fi
    mkdir -p "$STAGE/bin" "$STAGE/dist"
    touch "$STAGE/$MARKER"
    cp "$SOURCE/package.json" "$SOURCE/package-lock.json" "$STAGE/"
    cp -R "$SOURCE/dist/src" "$STAGE/dist/src"
    mkdir -p "$STAGE/systemd" "$STAGE/deploy" "$STAGE/docs"
    cp "$SOURCE/systemd/$SERVICE.service" "$STAGE/systemd/"
    cp "$SOURCE/deploy/install.sh" "$SOURCE/deploy/config.example.yaml" "$STAGE/deploy/"
    for f in README.md LICENSE docs/INSTALL-PI.md; do
        if [ -f "$SOURCE/$f" ]; then cp "$SOURCE/$f" "$STAGE/$f"; fi
    done
    # The wrapper pins the Node.js found now, so the service does not depend on PATH.
    local node_bin
    node_bin=$(command -v node)
    cat > "$STAGE/bin/qwen-edge" <<EOF
#!/bin/sh
# Written by deploy/install.sh: qwen-edge with the Node.js that was found at install time.
exec $node_bin $PREFIX/dist/src/launcher.cjs "\$@"
EOF
    chmod 0755 "$STAGE/bin/qwen-edge"
    chmod -R u=rwX,go=rX "$STAGE"
}

swap_in() {
    if [ -d "$ROOT" ]; then
        remove_ours "$ROOT.old"
        mv "$ROOT" "$ROOT.old"
    fi
    mv "$STAGE" "$ROOT"
    remove_ours "$ROOT.old"
    mkdir -p "$(dirname "$BINLINK")"
    ln -sfn "$PREFIX/bin/qwen-edge" "$BINLINK"
}

install_dependencies() {
    if [ "$RUN_NPM" -eq 0 ]; then
        say "skipped npm ci (--skip-npm): $PREFIX has no node_modules and will not run"
        return
    fi
    say "installing production dependencies for $PREFIX (npm ci --omit=dev)"
    # --ignore-scripts: no package code runs as root here; llama.cpp comes prebuilt (checked below).
    (cd "$STAGE" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) ||
        die "npm ci failed (see above); the installed version, if any, is unchanged"
    # The daemon runs llama.cpp on the CPU only (gpu: false): the CUDA/Vulkan builds are ~600 MB of dead weight.
    rm -rf "$STAGE"/node_modules/@node-llama-cpp/*-cuda* "$STAGE"/node_modules/@node-llama-cpp/*-vulkan*
    # A file, not `node -e`: getLlama() forks a test process that would inherit -e and run it again.
    cat > "$STAGE/.check-llama.mjs" <<'EOF'
const {getLlama} = await import("node-llama-cpp");
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
await llama.dispose();
EOF
    if ! (cd "$STAGE" && node .check-llama.mjs); then
        die "llama.cpp's prebuilt binary for this CPU does not load (see the error above); the installed version, if any, is unchanged"
    fi
    rm -f "$STAGE/.check-llama.mjs"
    say "llama.cpp's prebuilt binary loads on this CPU"
}

install_config() {
    mkdir -p "$CONFDIR"
    chmod 0755 "$CONFDIR"
    if [ -e "$CONFDIR/config.yaml" ]; then
        say "kept the existing /etc/qwen-edge/config.yaml (the current example is $PREFIX/deploy/config.example.yaml)"
    else
        # 0644: the service runs as a dynamic user that must read it; secrets never go in it.
        install -m 0644 "$SOURCE/deploy/config.example.yaml" "$CONFDIR/config.yaml"
        say "wrote /etc/qwen-edge/config.yaml from the example: set model.path and mqtt.url in it"
    fi
    if [ -e "$CONFDIR/mqtt-password" ] && [ "$(stat -c %a "$CONFDIR/mqtt-password")" != "600" ]; then
        warn "/etc/qwen-edge/mqtt-password is not mode 0600: run chmod 600 /etc/qwen-edge/mqtt-password"
    fi
}

install_unit() {
    mkdir -p "$(dirname "$UNIT")"
    # The unit names /opt/qwen-edge; follow --prefix.
    sed -e "s#/opt/qwen-edge/#$PREFIX/#g" "$SOURCE/systemd/$SERVICE.service" > "$UNIT.tmp"
    chmod 0644 "$UNIT.tmp"
    mv "$UNIT.tmp" "$UNIT"
    if systemd_usable; then
        systemctl daemon-reload
        if [ "$ENABLE" -eq 1 ]; then
            systemctl enable --quiet "$SERVICE"
            say "enabled $SERVICE.service (starts at boot)"
        fi
        # An upgrade of a running service takes effect now; a stopped one stays stopped.
        if systemctl is-active --quiet "$SERVICE"; then
            systemctl restart "$SERVICE"
            say "restarted the running service"
        fi
    elif [ -n "$DESTDIR" ]; then
        say "DESTDIR is set: skipped systemctl daemon-reload and enable"
    else
        say "systemd is not running here: skipped systemctl daemon-reload and enable"
    fi
}

if [ "$ACTION" = uninstall ]; then
    uninstall
    exit 0
fi

need_root
check_platform
copy_program
install_dependencies
swap_in
install_config
install_unit
say "installed qwen-edge $(node -p "require('$SOURCE/package.json').version") in $PREFIX"
cat <<EOF

Next steps:
  1. Edit /etc/qwen-edge/config.yaml: model.path (a Qwen3.5 GGUF), mqtt.url, mqtt.username.
  2. Broker password, if the broker needs one (read via the systemd credential, never argv):
       sudo install -m 0600 /dev/null /etc/qwen-edge/mqtt-password && sudoedit /etc/qwen-edge/mqtt-password
  3. sudo systemctl start qwen-edge

Watch it:
  systemctl status qwen-edge               state line from the daemon (STATUS=)
  journalctl -u qwen-edge -f               its JSON log
  mosquitto_sub -t 'qwen-edge/+/status' -v   the retained online/offline status
EOF
