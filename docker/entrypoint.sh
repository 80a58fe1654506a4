#!/usr/bin/env bash
# Start clip-grpc: the gRPC server and the REST bridge together (mode "all", the default), or
# just one of them ("server", "bridge"). The Docker image's ENTRYPOINT and `make run` both use
# this script; it runs whichever `python` is first on PATH.
#
#   entrypoint.sh [all]              both; configure them with CLIP_GRPC_* / REST_BRIDGE_* env
#   entrypoint.sh server [FLAGS...]  python -m clip_grpc FLAGS...
#   entrypoint.sh bridge [FLAGS...]  python -m rest_bridge FLAGS...
#
# Model: CLIP_GRPC_MODEL when set; else $MODEL_DIR (default /model) when it holds a model
# (a config.json, or exactly one .zip); else the demo model shipped in the package.
set -euo pipefail

MODEL_DIR="${MODEL_DIR:-/model}"

log() {
    printf '%s entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

# die CODE MESSAGE...
die() {
    local code=$1
    shift
    log "error: $*"
    exit "$code"
}

# Sets CLIP_GRPC_MODEL for the server, from MODEL_DIR when the caller did not choose.
choose_model() {
    if [[ -n "${CLIP_GRPC_MODEL:-}" ]]; then
        log "model: $CLIP_GRPC_MODEL (from CLIP_GRPC_MODEL)"
        return
    fi
    if [[ -f "$MODEL_DIR/config.json" ]]; then
        export CLIP_GRPC_MODEL="$MODEL_DIR"
        log "model: the folder $MODEL_DIR"
        return
    fi
    local zips=() entries=()
    if [[ -d "$MODEL_DIR" ]]; then
        shopt -s nullglob
        zips=("$MODEL_DIR"/*.zip)
        entries=("$MODEL_DIR"/*)
        shopt -u nullglob
    fi
    if ((${#zips[@]} == 1)); then
        export CLIP_GRPC_MODEL="${zips[0]}"
        log "model: the zip ${zips[0]}"
    elif ((${#entries[@]} == 0)); then
        log "model: the shipped demo model (nothing in $MODEL_DIR; mount a model folder or zip" \
            "there, or set CLIP_GRPC_MODEL, to serve your own)"
    else
        # Something is mounted but it is not a model: serving the demo model instead would hide
        # the mistake.
        die 2 "$MODEL_DIR holds neither a config.json nor exactly one .zip (found:" \
            "$(cd "$MODEL_DIR" && ls -m)); mount a model folder or a single zipped model there"
    fi
}

start_server() {
    choose_model
    exec python -m clip_grpc "$@"
}

start_bridge() {
    exec python -m rest_bridge "$@"
}

# Both in one container: if either exits, stop the other and fail; on SIGTERM, SIGINT or SIGHUP,
# ask both to drain and wait for them.
run_all() {
    choose_model
    local grpc_port="${CLIP_GRPC_PORT:-50051}"
    export REST_BRIDGE_GRPC_TARGET="${REST_BRIDGE_GRPC_TARGET:-127.0.0.1:$grpc_port}"
    stopping=0 server_pid="" bridge_pid=""
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT
    trap 'on_signal HUP' HUP  # a closed terminal must not leave the children running
    # Job control puts each child in its own process group, so a Ctrl-C in a terminal reaches
    # only this script, which then stops both children in order (and knows it asked them to).
    set -m

    python -m clip_grpc &
    server_pid=$!
    python -m rest_bridge &
    bridge_pid=$!
    log "gRPC server (pid $server_pid) on ${CLIP_GRPC_HOST:-[::]}:$grpc_port"
    log "REST bridge (pid $bridge_pid) on" \
        "http://${REST_BRIDGE_HOST:-0.0.0.0}:${REST_BRIDGE_PORT:-8081} -> $REST_BRIDGE_GRPC_TARGET"
    if ((stopping)); then stop_children; fi  # a signal came before both had started

    local first_pid=""
    # Returns early, leaving first_pid unset, when a trapped signal arrives.
    wait -n -p first_pid "$server_pid" "$bridge_pid" || true
    if ((!stopping)); then
        local other_pid=$server_pid
        if [[ "$first_pid" == "$server_pid" ]]; then other_pid=$bridge_pid; fi
        reap "$first_pid"
        local status=$reaped_status
        log "$(name_of "$first_pid") exited unexpectedly (code $status); stopping the other"
        stopping=1
        kill -TERM "$other_pid" 2>/dev/null || true
        reap "$other_pid"
        log "$(name_of "$other_pid") exited (code $reaped_status)"
        exit $((status == 0 ? 1 : status))
    fi

    reap "$server_pid"
    local server_status=$reaped_status
    log "gRPC server exited (code $server_status)"
    reap "$bridge_pid"
    log "REST bridge exited (code $reaped_status)"
    if ((server_status != 0)); then exit "$server_status"; fi
    exit "$reaped_status"
}

# SIGTERM for both, whichever signal came: children of a script may ignore SIGINT.
on_signal() {
    log "got SIG$1: asking the gRPC server and the REST bridge to drain and stop"
    stopping=1
    stop_children
}

stop_children() {
    local pid
    for pid in $server_pid $bridge_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
}

name_of() {
    if [[ "$1" == "$server_pid" ]]; then echo "gRPC server"; else echo "REST bridge"; fi
}

# Waits for child $1 to exit and sets reaped_status. Trapped signals interrupt `wait`, so it
# waits again while the child lives; bash remembers the status of a child it already reaped.
reap() {
    while kill -0 "$1" 2>/dev/null; do
        wait "$1" || true
    done
    reaped_status=0
    wait "$1" || reaped_status=$?
}

command -v python >/dev/null || die 2 "no python on PATH (activate the project's venv)"
mode="${1:-all}"
(($# > 0)) && shift
case "$mode" in
    all)
        (($# == 0)) || die 64 "mode all takes no flags; configure it with CLIP_GRPC_* and" \
            "REST_BRIDGE_* environment variables (or use mode server / bridge)"
        run_all
        ;;
    server) start_server "$@" ;;
    bridge) start_bridge "$@" ;;
    *) die 64 "unknown mode '$mode' (use all, server or bridge)" ;;
esac
