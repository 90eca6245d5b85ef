#!/usr/bin/env bash
# A local cluster of `tessera serve` replicas behind nginx (deploy/nginx/tessera.conf), on
# loopback.
#
#   tools/cluster.sh up N [--model DIR] [--threads T] [--port P] [--binary PATH] [-- SERVE_ARGS...]
#       starts N replicas on 127.0.0.1:P+1 .. P+N (each `--threads T`, default 1) and nginx on
#       127.0.0.1:P (default 8080), waits until every replica's /health and nginx answer, prints
#       the address. Model: models/demo-dates by default. SERVE_ARGS go to every replica.
#   tools/cluster.sh down          stops what `up` started (its PID files only: TERM, then KILL
#                                  after 10 s), nginx first
#   tools/cluster.sh status        each process: PID, alive or not, /health
#   tools/cluster.sh restart I     stops replica I (1..N) if it runs and starts it again as `up`
#                                  did, waiting for its /health
#
# Everything lives in $TESSERA_CLUSTER_DIR (default ${XDG_RUNTIME_DIR:-/tmp}/tessera-cluster-UID):
# cluster.env (what `up` was given), replica-I.pid / .log, nginx/ (nginx.conf, nginx.pid, logs,
# temp files). One cluster per directory; several clusters run side by side with different
# directories and ports. Exit code 2 with one line on stderr for a usage error, a missing nginx,
# binary or model, a busy port, a process that does not become healthy in
# $TESSERA_CLUSTER_TIMEOUT seconds (default 120; its log's tail is printed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${TESSERA_CLUSTER_DIR:-${XDG_RUNTIME_DIR:-/tmp}/tessera-cluster-$(id -u)}
TIMEOUT=${TESSERA_CLUSTER_TIMEOUT:-120}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

die() {
  echo "cluster.sh: $*" >&2
  exit 2
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# True when something accepts connections on 127.0.0.1:$1.
port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The PID in file $1 when that process is alive and is the program named $2; empty otherwise
# (a stale file, or a PID the system has given to another program since).
live_pid() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [ -r "/proc/$pid/cmdline" ] || return 0
  if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$name"; then echo "$pid"; fi
}

alive() {  # a process that has not exited (a zombie has)
  [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# Stops the process of PID file $1 (program $2) with signal $3, KILL after 10 s; removes the file.
stop_pid() {
  local file=$1 name=$2 sig=$3 pid i
  pid=$(live_pid "$file" "$name")
  if [ -n "$pid" ]; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      echo "cluster.sh: $name (pid $pid) still running after 10 s: KILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

health_code() {  # HTTP status of http://127.0.0.1:$1/health, 000 when nothing answers
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$1/health" || true
}

# Waits until http://127.0.0.1:$1/health answers 200 while PID file $2's process ($3) lives.
wait_healthy() {
  local port=$1 file=$2 name=$3 log=$4 deadline=$((SECONDS + TIMEOUT))
  while [ "$(health_code "$port")" != 200 ]; do
    if [ -z "$(live_pid "$file" "$name")" ]; then
      tail -n 20 "$log" >&2 || true
      die "$name on port $port exited before it was ready (log: $log)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$log" >&2 || true
      die "$name on port $port not healthy after $TIMEOUT s (log: $log)"
    fi
    sleep 0.1
  done
}

load_env() {
  [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (run: tools/cluster.sh up N)"
  # shellcheck disable=SC1091
  source "$DIR/cluster.env"
}

# Starts replica $1 of the cluster described by cluster.env (already loaded).
start_replica() {
  local i=$1 port=$((PORT + $1))
  local pidf="$DIR/replica-$i.pid" log="$DIR/replica-$i.log"
  [ -z "$(live_pid "$pidf" tessera)" ] || die "replica $i is already running"
  port_busy "$port" && die "port $port (replica $i) is busy"
  # setsid: the replica outlives this script and a terminal's Ctrl-C; `down` stops it.
  setsid "$BINARY" serve --model "$MODEL" --host 127.0.0.1 --port "$port" --threads "$THREADS" \
    "${SERVE_ARGS[@]}" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidf"
}

cmd_up() {
  [ $# -ge 1 ] && [[ "$1" =~ ^[1-9][0-9]*$ ]] || die "up: N (replicas, at least 1) first; see --help"
  local n=$1
  shift
  local model="$ROOT/models/demo-dates" threads=1 port=8080 binary="$ROOT/build/tools/tessera"
  local extra=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --model) model=${2:?--model needs a directory}; shift 2 ;;
      --threads) threads=${2:?--threads needs a number}; shift 2 ;;
      --port) port=${2:?--port needs a number}; shift 2 ;;
      --binary) binary=${2:?--binary needs a path}; shift 2 ;;
      --) shift; extra=("$@"); break ;;
      -h | --help) usage ;;
      *) die "up: unknown option '$1'" ;;
    esac
  done
  [[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "--threads must be a positive number, got '$threads'"
  [[ "$port" =~ ^[1-9][0-9]*$ ]] && [ $((port + n)) -le 65535 ] ||
    die "--port must leave room for $n replicas below 65536, got '$port'"
  [ -x "$NGINX" ] || die "nginx not found (apt-get install nginx, or tools/setup.sh)"
  command -v curl >/dev/null || die "curl not found (apt-get install curl, or tools/setup.sh)"
  [ -x "$binary" ] || die "tessera binary '$binary' not found (build: tools/build.sh)"
  [ -f "$model/config.json" ] || die "model directory '$model' has no config.json"
  model=$(cd "$model" && pwd)
  binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  if [ -f "$DIR/cluster.env" ]; then
    local running=""
    for f in "$DIR"/replica-*.pid; do
      [ -e "$f" ] && [ -n "$(live_pid "$f" tessera)" ] && running=1
    done
    [ -n "$(live_pid "$DIR/nginx/nginx.pid" nginx)" ] && running=1
    [ -z "$running" ] || die "a cluster already runs in $DIR (tools/cluster.sh down first)"
  fi
  for ((p = port; p <= port + n; p++)); do
    port_busy "$p" && die "port $p is busy (choose another with --port)"
  done

  rm -rf "$DIR"/replica-*.pid "$DIR"/replica-*.log "$DIR/nginx"
  {
    echo "# written by tools/cluster.sh up"
    printf 'N=%q\nPORT=%q\nTHREADS=%q\nMODEL=%q\nBINARY=%q\n' "$n" "$port" "$threads" \
      "$model" "$binary"
    printf 'SERVE_ARGS=('
    local a
    for a in "${extra[@]+"${extra[@]}"}"; do printf '%q ' "$a"; done
    printf ')\n'
  } >"$DIR/cluster.env"
  load_env

  # Whatever fails from here on (a replica or nginx that does not come up), what started stops.
  trap 'rc=$?; if [ $rc -ne 0 ]; then cmd_down >/dev/null 2>&1; fi; exit $rc' EXIT
  for ((i = 1; i <= n; i++)); do start_replica "$i"; done
  for ((i = 1; i <= n; i++)); do
    wait_healthy $((port + i)) "$DIR/replica-$i.pid" tessera "$DIR/replica-$i.log"
  done

  local ng="$DIR/nginx" servers=""
  mkdir -p "$ng/tmp"
  for ((i = 1; i <= n; i++)); do
    servers+="    server 127.0.0.1:$((port + i)) max_fails=1 fail_timeout=2s;"$'\n'
  done
  servers=${servers%$'\n'}
  local conf
  conf=$(grep -v '^#' "$ROOT/deploy/nginx/tessera.conf")  # the template's header comment names the @...@ words
  conf=${conf//@SERVERS@/$servers}
  conf=${conf//@PORT@/$port}
  conf=${conf//@DIR@/$DIR}
  printf '%s\n' "$conf" >"$ng/nginx.conf"
  "$NGINX" -t -q -p "$ng" -e "$ng/error.log" -c "$ng/nginx.conf" ||
    die "nginx rejected $ng/nginx.conf"
  setsid "$NGINX" -p "$ng" -e "$ng/error.log" -c "$ng/nginx.conf" >>"$ng/stderr.log" 2>&1 \
    </dev/null &
  echo $! >"$ng/master.pid"
  wait_healthy "$port" "$ng/master.pid" nginx "$ng/error.log"
  trap - EXIT
  echo "cluster.sh: $n replica(s) of $model (threads $threads) on 127.0.0.1:$((port + 1))..$((port + n)), nginx on http://127.0.0.1:$port (dir $DIR)"
}

cmd_down() {
  [ -d "$DIR" ] || { echo "cluster.sh: nothing to stop in $DIR"; return 0; }
  stop_pid "$DIR/nginx/master.pid" nginx QUIT
  rm -f "$DIR/nginx/nginx.pid"
  local f stopped=0
  for f in "$DIR"/replica-*.pid; do
    [ -e "$f" ] || continue
    stop_pid "$f" tessera TERM
    stopped=$((stopped + 1))
  done
  echo "cluster.sh: stopped nginx and $stopped replica(s) of $DIR"
}

cmd_status() {
  load_env
  local i pid
  pid=$(live_pid "$DIR/nginx/master.pid" nginx)
  echo "nginx      127.0.0.1:$PORT  pid ${pid:--}  $([ -n "$pid" ] && echo "alive /health $(health_code "$PORT")" || echo stopped)"
  for ((i = 1; i <= N; i++)); do
    pid=$(live_pid "$DIR/replica-$i.pid" tessera)
    echo "replica $i  127.0.0.1:$((PORT + i))  pid ${pid:--}  $([ -n "$pid" ] && echo "alive /health $(health_code $((PORT + i)))" || echo stopped)"
  done
}

cmd_restart() {
  load_env
  [ $# -eq 1 ] && [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$N" ] ||
    die "restart: a replica number 1..$N"
  stop_pid "$DIR/replica-$1.pid" tessera TERM
  start_replica "$1"
  wait_healthy $((PORT + $1)) "$DIR/replica-$1.pid" tessera "$DIR/replica-$1.log"
  echo "cluster.sh: replica $1 restarted on 127.0.0.1:$((PORT + $1)) (pid $(cat "$DIR/replica-$1.pid"))"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart) cmd_restart "$@" ;;
  -h | --help | help) usage ;;
  *) die "unknown command '$cmd' (up N | down | status | restart I)" ;;
esac
