#!/usr/bin/env bash
# Builds the four aichat images for real with podman (no Docker engine, no registry needed),
# proves one of them works, reports the sizes and cleans up.
#   flock /tmp/aichat-build.lock deploy/build-images.sh [--keep] [--save DIR]
#     --keep      keep the podman storage (printed at the end) instead of removing it
#     --save DIR  also write each image as DIR/aichat-<service>.tar (podman/docker load, or
#                 `kind load image-archive`), for pushing to a cluster
# What it does:
#   1. a local debian:bookworm-slim base: debootstrap --variant=minbase + podman import
#      (no registry is reachable here; the Dockerfile builds with --pull=never);
#   2. podman build of deploy/Dockerfile, targets user, conversation, ai-agent, usage, from the
#      committed tree (git archive HEAD: reproducible, and nobody's half-done edits); the
#      builder stage is shared, so the C++ code compiles once (10+ minutes on 2 cores);
#   3. checks: every image runs `--help` (all shared libraries present) as uid 10001; the
#      user image serves against a throwaway PostgreSQL on the host and answers
#      grpc.health.v1.Health/Check from the host through a published port; `podman stop`
#      (SIGTERM to PID 1) ends it with exit code 0 well before the stop timeout;
#   4. prints the image sizes and removes everything it made.
# Storage is private to this run (vfs under a temporary folder), so other podman users are
# not touched. Run it under the build lock as shown: it compiles on both cores.
# AICHAT_IMAGES_WORK=DIR (a folder a --keep run left) reruns the checks without building.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"

KEEP=""
SAVE=""
while (($#)); do
  case $1 in
    --keep) KEEP=1 ;;
    --save) SAVE=$(realpath -m "$2"); shift ;;
    *) die "usage: deploy/build-images.sh [--keep] [--save DIR]" ;;
  esac
  shift
done

install_deps podman runc debootstrap slirp4netns uidmap python3-grpcio python3-protobuf \
  protobuf-compiler-grpc grpc-proto
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, podman with vfs storage)"

REUSE=""
if [[ -n "${AICHAT_IMAGES_WORK:-}" ]]; then
  WORK=$AICHAT_IMAGES_WORK REUSE=1
else
  WORK=$(mktemp -d /var/tmp/aichat-images-XXXXXX)
  chmod 755 "$WORK"
fi
PODMAN=(podman --root "$WORK/storage" --runroot "$WORK/run" --storage-driver=vfs
  --cgroup-manager=cgroupfs --events-backend=file --runtime=runc --tmpdir "$WORK/tmp")
mkdir -p "$WORK/tmp"
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
SERVICES=(user conversation ai-agent usage)
PGDATA_DIR=""
CONTAINER=""

cleanup() {
  local rc=$?
  [[ -n "$CONTAINER" ]] && "${PODMAN[@]}" rm -f -t 0 "$CONTAINER" >/dev/null 2>&1 || true
  [[ -n "$PGDATA_DIR" ]] && pg_stop "$PGDATA_DIR/data" immediate
  [[ -n "$PGDATA_DIR" ]] && rm -rf "$PGDATA_DIR"
  if [[ -n "$KEEP" ]]; then
    log "kept: ${PODMAN[*]} images   (AICHAT_IMAGES_WORK=$WORK to reuse)"
  else
    "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1 || true
    "${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
    "${PODMAN[@]}" system reset -f >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

# ---------------------------------------------------------------- 1. base image
build_all() {
  t0=$SECONDS
  log "debootstrap --variant=minbase bookworm (the local debian:bookworm-slim)"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  # Slim like the real image: no docs, man pages or apt lists.
  rm -rf "$WORK"/rootfs/usr/share/{doc,man,info}/* "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/cache/apt/*.bin
  tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import - docker.io/library/debian:bookworm-slim >/dev/null
  rm -rf "$WORK/rootfs"
  log "base image ready ($((SECONDS - t0)) s)"

  # ---------------------------------------------------------------- 2. build
  mkdir -p "$WORK/context"
  git -C "$AICHAT_ROOT" archive --format=tar HEAD | tar -x -C "$WORK/context"
  log "building from $(git -C "$AICHAT_ROOT" rev-parse --short HEAD) (committed tree)"
  for svc in "${SERVICES[@]}"; do
    t0=$SECONDS
    log "podman build --target $svc -t aichat-$svc"
    "${PODMAN[@]}" build --pull=never --network=host "${ULIMITS[@]}" --layers \
      -f "$WORK/context/deploy/Dockerfile" --target "$svc" -t "localhost/aichat-$svc:latest" \
      "$WORK/context" >"$WORK/build-$svc.log" 2>&1 ||
      { tail -n 40 "$WORK/build-$svc.log"; die "image build failed for $svc"; }
    log "aichat-$svc built ($((SECONDS - t0)) s)"
  done
}
[[ -n "$REUSE" ]] || build_all

# ---------------------------------------------------------------- 3. checks
for svc in "${SERVICES[@]}"; do
  "${PODMAN[@]}" run --rm --network=none "${ULIMITS[@]}" "localhost/aichat-$svc:latest" --help >/dev/null ||
    die "aichat-$svc --help failed in its image"
  uid=$("${PODMAN[@]}" run --rm --network=none "${ULIMITS[@]}" --entrypoint /usr/bin/id "localhost/aichat-$svc:latest" -u)
  [[ "$uid" == 10001 ]] || die "aichat-$svc runs as uid $uid, not 10001"
done
log "all four images start (--help) and run as uid 10001"

# A PostgreSQL on the host for the user service; the container reaches the host's loopback
# through slirp4netns (10.0.2.2), and the host reaches the container's published port.
PGDATA_DIR=$(mktemp -d /tmp/aichat-img-pg-XXXXXX)
chmod 755 "$PGDATA_DIR"
pg_init "$PGDATA_DIR/data"
PG_PORT=$(free_port)
pg_start "$PGDATA_DIR/data" "$PG_PORT" "$PGDATA_DIR/pg.log"
as_postgres createdb -h 127.0.0.1 -p "$PG_PORT" -U postgres aichat_user
keys=$("${PODMAN[@]}" run --rm --network=none "${ULIMITS[@]}" localhost/aichat-user:latest keygen)
GRPC_PORT=$(free_port)
METRICS_PORT=$(free_port)
CONTAINER=aichat-user-check-$$
"${PODMAN[@]}" run -d --name "$CONTAINER" "${ULIMITS[@]}" --read-only --cap-drop=ALL \
  --security-opt=no-new-privileges \
  --network=slirp4netns:allow_host_loopback=true \
  -p "127.0.0.1:$GRPC_PORT:50051" -p "127.0.0.1:$METRICS_PORT:9101" \
  -e DATABASE_URL="postgresql://postgres@10.0.2.2:$PG_PORT/aichat_user" \
  -e AICHAT_JWT_SIGNING_KEY="$(sed -n 's/^AICHAT_JWT_SIGNING_KEY=//p' <<<"$keys")" \
  -e AICHAT_JWT_PUBLIC_KEYS="$(sed -n 's/^AICHAT_JWT_PUBLIC_KEYS=//p' <<<"$keys")" \
  localhost/aichat-user:latest >/dev/null
# pg_start listens on 127.0.0.1 only; slirp4netns maps 10.0.2.2 to the host's loopback.
if ! /usr/bin/python3 "$AICHAT_ROOT/deploy/tools/grpc_health.py" "127.0.0.1:$GRPC_PORT" "" 60; then
  "${PODMAN[@]}" logs "$CONTAINER" | tail -n 20
  die "the user service in its container did not answer the health check"
fi
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q '^aichat_db_pool_connections' ||
  die "no metrics from the container"
log "metrics served from the container on 127.0.0.1:$METRICS_PORT"
t0=$SECONDS
"${PODMAN[@]}" stop -t 60 "$CONTAINER" >/dev/null
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$CONTAINER")
took=$((SECONDS - t0))
[[ "$code" == 0 && $took -lt 40 ]] || die "SIGTERM: exit code $code after $took s (want 0, quickly)"
log "SIGTERM to PID 1: exit code 0 after ${took} s"
"${PODMAN[@]}" rm "$CONTAINER" >/dev/null
CONTAINER=""

# ---------------------------------------------------------------- 4. sizes
log "image sizes:"
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep 'aichat-\|debian' | sed 's/^/    /'
if [[ -n "$SAVE" ]]; then
  mkdir -p "$SAVE"
  for svc in "${SERVICES[@]}"; do
    "${PODMAN[@]}" save --format docker-archive -o "$SAVE/aichat-$svc.tar" "localhost/aichat-$svc:latest"
  done
  log "saved to $SAVE/aichat-<service>.tar"
fi
log "images OK"
