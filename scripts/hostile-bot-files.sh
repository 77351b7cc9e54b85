#!/usr/bin/env bash
# Sends the hostile bot files of docs/RELIABILITY.md ("Bot files") to a
# fresh server and prints each answer's status and time, and the server's
# peak memory (VmHWM) before and after each.
#   scripts/hostile-bot-files.sh [BINARY]
# Needs curl, python3 and sqlite3 (to store a calendar the API now refuses,
# as one saved before the checks would be).
set -euo pipefail
bin="${1:-target/release/botwire}"
dir="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
base="http://127.0.0.1:$port"
db="$dir/h.db"
"$bin" serve --listen "127.0.0.1:$port" --database "sqlite://$db" >"$dir/out.txt" 2>"$dir/err.txt" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
    grep -qoE 'bw_[A-Za-z0-9_-]{43}' "$dir/out.txt" 2>/dev/null && break
    sleep 0.1
done
key="$(grep -oE 'bw_[A-Za-z0-9_-]{43}' "$dir/out.txt" | head -n 1 || true)"
[ -n "$key" ] || { echo "no admin key" >&2; cat "$dir/err.txt" >&2; exit 1; }

hwm() { awk '/VmHWM/ {printf "%d MB", $2 / 1024}' "/proc/$server/status"; }
# send METHOD PATH CONTENT-TYPE FILE: prints "status seconds"
send() {
    curl -s -o "$dir/answer.json" -w '%{http_code} %{time_total}s' -X "$1" "$base$2" \
        -H "Authorization: Bearer $key" -H "content-type: $3" --data-binary "@$4"
}

python3 - "$dir" <<'EOF'
import json, sys
d = sys.argv[1]
example = open("examples/appointment.yaml").read()
head, flow = example.split("flow:\n", 1)
head = head.split("calendar:\n", 1)[0]
day = "[" + ", ".join(['"00:00-23:59"'] * 3000) + "]"
open(f"{d}/calendar.yaml", "w").write(
    f"{head}calendar:\n  timezone: Europe/Madrid\n  slot_minutes: 1\n  horizon_days: 366\n"
    f"  hours: {{ mon: {day} }}\nflow:\n{flow}")
hours = {k: ["00:00-23:59"] * 3000 for k in ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
open(f"{d}/settings.json", "w").write(json.dumps(
    {"calendar": {"timezone": "Europe/Madrid", "slot_minutes": 1, "horizon_days": 366, "hours": hours}}))
params = '      a: &a "' + "x" * 40000 + '"\n'
for name, prev in [("b", "a"), ("c", "b"), ("d", "c"), ("e", "d")]:
    params += f"      {name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
open(f"{d}/aliases.yaml", "w").write(
    "id: bomb\nname: Bomb\ntype: support\nwebhooks:\n  - name: w\n    url: \"http://127.0.0.1:9/w\"\n"
    f"    params:\n{params}flow:\n  start: s\n  nodes:\n    s: {{ webhook: w, next: e }}\n    e: {{ end: true }}\n")
for i, text in enumerate(["hi", "Ana"]):
    open(f"{d}/chat{i}.json", "w").write(json.dumps({"contact": {"phone": "+34600000009"}, "text": text}))
open(f"{d}/endpoint.json", "w").write(json.dumps({"url": "http://127.0.0.1:9/hook"}))
EOF

echo "started: peak $(hwm)"
echo "calendar bomb import ($(wc -c <"$dir/calendar.yaml") bytes): $(send POST /v1/bots/import application/yaml "$dir/calendar.yaml"); peak $(hwm)"
head -c 300 "$dir/answer.json"; echo

cp examples/appointment.yaml "$dir/appointment.yaml"
send POST /v1/bots/import application/yaml "$dir/appointment.yaml" >/dev/null
# 7 x 3,000 all-day ranges written straight to the database, as a bot saved
# before the checks would hold them.
sqlite3 "$db" "UPDATE bots SET config = CAST(readfile('$dir/settings.json') AS TEXT) WHERE id = 'appointment'"
send POST /v1/bots/appointment/chat application/json "$dir/chat0.json" >/dev/null
echo "booking turn over a stored 21,000-range calendar: $(send POST /v1/bots/appointment/chat application/json "$dir/chat1.json"); peak $(hwm)"
head -c 300 "$dir/answer.json"; echo

echo "alias bomb import ($(wc -c <"$dir/aliases.yaml") bytes, 262 MB expanded): $(send POST /v1/bots/import application/yaml "$dir/aliases.yaml"); peak $(hwm)"
head -c 300 "$dir/answer.json"; echo

for _ in $(seq 1 100); do
    send POST /v1/bots/appointment/endpoints application/json "$dir/endpoint.json" >/dev/null
done
echo "endpoint 101 of a bot: $(send POST /v1/bots/appointment/endpoints application/json "$dir/endpoint.json"); peak $(hwm)"
head -c 300 "$dir/answer.json"; echo
echo "database with its WAL: $(du -ck "$db"* | tail -n 1 | cut -f1) KB"
