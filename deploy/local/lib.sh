# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this
# Shared helpers for the deploy/local scripts. Source it; do not run it.
#
# Everything here is plain bash + coreutils + curl, so the scripts work on a fresh machine
# with nothing but Node/npm and a Rust toolchain.

# Pinned versions of the stand-in servers used by tests and the local stack.
POUCHDB_SERVER_VERSION=4.2.0
S3S_FS_VERSION=0.14.1

# Where the servers are installed: outside the clone, so CI can cache it between runs.
VIBE_TOOLS_DIR="${VIBE_TOOLS_DIR:-$HOME/.cache/vibe-cloud/tools}"
POUCHDB_PREFIX="$VIBE_TOOLS_DIR/pouchdb"
S3S_ROOT="$VIBE_TOOLS_DIR/s3s"

# The binaries; the same variables are read by the Rust test support crate.
VIBE_POUCHDB_SERVER_BIN="${VIBE_POUCHDB_SERVER_BIN:-$POUCHDB_PREFIX/node_modules/.bin/pouchdb-server}"
VIBE_S3S_FS_BIN="${VIBE_S3S_FS_BIN:-$S3S_ROOT/bin/s3s-fs}"

# The repository root (deploy/local/..).
VIBE_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf '%s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Absolute path of a (possibly not yet existing) directory; creates it.
abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# A random URL-safe secret of $1 hex characters (default 32).
random_hex() {
  local n="${1:-32}"
  od -An -N"$((n / 2))" -tx1 /dev/urandom | tr -d ' \n'
}

require_binaries() {
  [[ -x "$VIBE_POUCHDB_SERVER_BIN" ]] ||
    die "pouchdb-server not found at $VIBE_POUCHDB_SERVER_BIN; run deploy/local/install-servers"
  [[ -x "$VIBE_S3S_FS_BIN" ]] ||
    die "s3s-fs not found at $VIBE_S3S_FS_BIN; run deploy/local/install-servers"
}

# True when the PID in file $1 belongs to a live process whose command line contains $2.
pid_alive() {
  local pidfile="$1" marker="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$marker"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start "$@" detached in its own session (so the whole process group can be stopped),
# with output to $2 and the PID written to $1.
spawn_detached() {
  local pidfile="$1" logfile="$2"
  shift 2
  setsid "$@" >>"$logfile" 2>&1 </dev/null &
  echo "$!" >"$pidfile"
}

# Poll until "$3..." succeeds, the process in pidfile $1 dies, or $2 seconds pass.
wait_until() {
  local pidfile="$1" timeout="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@"; then return 0; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 2; fi
    sleep 0.2
  done
  return 1
}

# Stop the process (group) whose PID is in file $1: TERM, then KILL after $2 seconds (default 10).
stop_pidfile() {
  local pidfile="$1" grace="${2:-10}" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}
