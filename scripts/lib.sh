# Shared shell functions for the aichat scripts. Source it; do not run it.
# shellcheck shell=bash

AICHAT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN=/usr/lib/postgresql/15/bin

log() { printf '\033[1m[aichat]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[aichat] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Debian packages the build, tests and local run need.
AICHAT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  prometheus-cpp-dev libssl-dev libpq-dev libsodium-dev libfmt-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  postgresql postgresql-contrib openssl curl python3 clang libclang-rt-14-dev tmux
)

install_deps() {
  local missing=()
  for p in "${AICHAT_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "missing packages and not root: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# build [DIR] — configure once, then build everything with ccache.
build() {
  local dir="${1:-$AICHAT_ROOT/build}"
  local jobs="${AICHAT_JOBS:-$(nproc)}"
  if [[ ! -f "$dir/build.ninja" ]]; then
    cmake -S "$AICHAT_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  fi
  log "building in $dir (-j$jobs)"
  cmake --build "$dir" -j"$jobs"
}

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# free_port — one free port below the ephemeral range (see scripts/free_ports.py).
free_port() {
  python3 "$AICHAT_ROOT/scripts/free_ports.py" 1
}

# alive PID — the process exists and has not exited. A process that has exited but is
# not reaped yet (a zombie) still answers kill -0; counting it as running would keep
# `run.sh up` from restarting a service that has just stopped.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "${stat##*) }" != Z* ]]
}

# wait_port PORT [SECONDS] — until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  while ((SECONDS < deadline)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# pg_init DATADIR — a new cluster owned by postgres (trust auth on loopback only).
pg_init() {
  local data=$1
  mkdir -p "$data"
  [[ $(id -u) -eq 0 ]] && chown postgres "$data" && chmod 700 "$data"
  as_postgres "$PG_BIN/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
}

# pg_start DATADIR PORT LOGFILE [extra postgres -c options...]
pg_start() {
  local data=$1 port=$2 logfile=$3
  shift 3
  local opts="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=300"
  for o in "$@"; do opts+=" -c $o"; done
  touch "$logfile"
  [[ $(id -u) -eq 0 ]] && chown postgres "$logfile"
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -w -t 60 -o "$opts" start >/dev/null
}

pg_stop() {
  local data=$1 mode=${2:-fast}
  as_postgres "$PG_BIN/pg_ctl" -D "$data" -m "$mode" -w stop >/dev/null 2>&1 || true
}
