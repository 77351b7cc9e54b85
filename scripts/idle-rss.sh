#!/bin/sh
# Resident memory of a fresh, idle `botwire serve` on an empty SQLite
# database: start it, wait for /readyz to answer 200, wait 5 s more, read
# VmRSS (and its anonymous/file split) from /proc/PID/status, stop it.
# Runs three times. Usage: scripts/idle-rss.sh [BINARY] (default
# target/release/botwire). Only loopback is used.
set -eu
bin=${1:-target/release/botwire}
runs=${RUNS:-3}
i=1
while [ "$i" -le "$runs" ]; do
    dir=$(mktemp -d)
    port=$((20000 + $$ % 10000 + i))
    env -i PATH="$PATH" BOTWIRE_DELIVERY_SYSTEM_DNS=false \
        "$bin" serve --database "sqlite://$dir/botwire.db" --listen "127.0.0.1:$port" \
        >"$dir/out" 2>"$dir/err" &
    pid=$!
    n=0
    until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
        n=$((n + 1))
        if [ "$n" -gt 600 ]; then echo "not ready after 60 s" >&2; kill "$pid"; exit 1; fi
        sleep 0.1
    done
    sleep 5
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status")
    file=$(awk '/^RssFile/ {print $2}' "/proc/$pid/status")
    threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
    printf 'run %d: VmRSS %d KiB (%.1f MiB): anon %d KiB, file %d KiB; %d threads\n' \
        "$i" "$rss" "$(echo "$rss / 1024" | bc -l)" "$anon" "$file" "$threads"
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir"
    i=$((i + 1))
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
