# Shared by the benchmark scripts (sourced): a throw-away data dir with
# Redis + PostgreSQL, process bookkeeping, wrk runs and memory figures.
# Benchmarks print figures and never fail on a timing.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${ATELIER_BIN_DIR:-$ROOT/build/release}"
DURATION="${DURATION:-8}"
command -v wrk >/dev/null || { echo "bench: wrk not installed (deploy/local/install-deps)"; exit 1; }

DIR="$(mktemp -d /tmp/atelier-bench.XXXXXX)"
chmod 755 "$DIR"
PIDS=()
bench_cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    ATELIER_DATA_DIR="$DIR" "$ROOT/deploy/local/atelier" services-down >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap bench_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export ATELIER_DATA_DIR="$DIR" ATELIER_ACCESS_LOG=false
PORT="$(free_port)"
export ATELIER_HTTP_PORT="$PORT"
BASE="http://127.0.0.1:$PORT"

# start_proc role [name]: run one Atelier binary in the background; sets LAST_PID
start_proc() {
    "$BIN/$1/atelier-$1" >"$DIR/${2:-$1}.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

wait_http() { # url
    for _ in $(seq 200); do curl -fs "$1" >/dev/null && return 0; sleep 0.05; done
    echo "bench: $1 did not answer" >&2; return 1
}

# run_wrk threads conns url [wrk args...] -> "rps p50_ms p99_ms non2xx"
run_wrk() {
    local t="$1" c="$2" url="$3"; shift 3
    wrk -t"$t" -c"$c" -d"${DURATION}s" --latency "$@" "$url" 2>&1 | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /Requests\/sec/ { rps = $2 }
        /Non-2xx/ { bad = $NF }
        END { printf "%.0f %.3f %.3f %s\n", rps, p50, p99, (bad == "" ? 0 : bad) }'
}

row() { printf '%-40s %10s %10s %10s %8s\n' "$@"; }
header() { row "case" "req/s" "p50 ms" "p99 ms" "non-2xx"; }
rss() { awk '/VmRSS|VmHWM/ { printf "%s %s kB  ", $1, $2 }' "/proc/$1/status"; }
