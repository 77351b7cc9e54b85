#!/usr/bin/env bash
# Runs the example receivers (examples/receivers/{python,node}) against a real
# botwire server: each gets an endpoint, a test event and a conversation's
# events, and must verify every delivery with its ecosystem's Standard
# Webhooks library; a tampered request must be refused with 401.
#   scripts/receivers.sh [BINARY]
set -euo pipefail
# A port nothing listens on, chosen by the kernel (a random one could be
# taken: another service, or a test's server).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
[ -n "${RECEIVERS_TRACE:-}" ] && set -x
bin="$(realpath "${1:-target/release/botwire}")"
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

echo "-- installing the receivers' pinned libraries"
pip install -q --root-user-action=ignore -r "$root/examples/receivers/python/requirements.txt"
(cd "$root/examples/receivers/node" && npm ci --no-audit --no-fund --silent)

port="$(free_port)"
BOTWIRE_DELIVERY_SYSTEM_DNS=false "$bin" serve --listen "127.0.0.1:$port" --database "sqlite://$dir/r.db" --allow-net 127.0.0.1 \
    >"$dir/out.txt" 2>"$dir/err.txt" &
pids+=($!)
for _ in $(seq 1 100); do
    grep -qoE 'bw_[A-Za-z0-9_-]{43}' "$dir/out.txt" 2>/dev/null && break
    sleep 0.1
done
key="$(grep -oE 'bw_[A-Za-z0-9_-]{43}' "$dir/out.txt" | head -n 1 || true)"
[ -n "$key" ] || { echo "receivers.sh: the server printed no admin key" >&2; cat "$dir/err.txt" >&2; exit 1; }
api="http://127.0.0.1:$port"
call() { curl -sS --fail-with-body -H "Authorization: Bearer $key" "$@"; }
post() { call -X POST -H 'Content-Type: application/json' "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

call -X POST "$api/v1/bots/import" -H 'Content-Type: application/yaml' \
    --data-binary @"$root/examples/elipackage.yaml" >/dev/null

failed=0
check() { # name, command…
    local name="$1"; shift
    local rport="$(free_port)"
    local ep secret
    ep="$(post "$api/v1/bots/elipackage/endpoints" -d "{\"url\": \"http://127.0.0.1:$rport/hook\"}")"
    local id; id="$(echo "$ep" | json "['id']")"
    secret="$(call "$api/v1/endpoints/$id/secret" | json "['secret']")"
    WEBHOOK_SECRET="$secret" "$@" "$rport" >"$dir/$name.log" 2>"$dir/$name.err" &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$rport/" 2>/dev/null && break
        sleep 0.1
    done
    # A tampered request: right headers, other body.
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$rport/hook" \
        -H 'webhook-id: msg_x' -H "webhook-timestamp: $(date +%s)" \
        -H 'webhook-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' -d '{"type":"forged"}')"
    post "$api/v1/endpoints/$id/test" >/dev/null
    for text in hi Ana 2; do
        post "$api/v1/bots/elipackage/chat" -d "{\"contact\": {\"id\": \"$name\"}, \"text\": \"$text\"}" >/dev/null
    done
    # webhook.test, message.received x3, conversation.started, response.received,
    # option.selected, conversation.completed.
    local ok=0
    for _ in $(seq 1 100); do
        # Occurrences, not lines: count a record even if another shares its line.
        ok="$({ grep -o '"verified": *true' "$dir/$name.log" || true; } | wc -l)"
        [ "$ok" -ge 8 ] && break
        sleep 0.1
    done
    local bad; bad="$({ grep -o '"verified": *false' "$dir/$name.log" || true; } | wc -l)"
    local pending; pending="$(call "$api/v1/endpoints/$id/deliveries?status=failed" | json "['data'].__len__()" 2>/dev/null || echo "?")"
    if [ "$ok" -ge 8 ] && [ "$bad" -eq 1 ] && [ "$code" = "401" ]; then
        echo "$name: $ok deliveries verified, the forged request refused with $code"
    else
        echo "$name: FAILED ($ok verified, $bad refused, forged request answered $code, failed deliveries: $pending)" >&2
        cat "$dir/$name.log" "$dir/$name.err" >&2
        failed=$((failed + 1))
    fi
}
check python python3 "$root/examples/receivers/python/receiver.py"
check node node "$root/examples/receivers/node/receiver.js"
[ "$failed" -eq 0 ] && echo "receivers: 2 passed, 0 failed" || { echo "receivers: $failed failed" >&2; exit 1; }
