#!/usr/bin/env bash
# Fuzzes every route of the OpenAPI document with schemathesis (from PyPI):
# no 5xx, no undocumented status, no response that breaks its schema.
# Exits non-zero on any failure (CI runs it with a few examples per route).
#   scripts/schemathesis.sh [BINARY] [MAX_EXAMPLES]
#   scripts/schemathesis.sh --install     (only install schemathesis)
set -euo pipefail
# A port nothing listens on, chosen by the kernel (a random one could be
# taken: another service, or a test's server).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
version="4.32.5"
if ! st --version 2>/dev/null | grep -qF "$version"; then
    pip install -q --root-user-action=ignore "schemathesis==$version"
fi
[ "${1:-}" = "--install" ] && exit 0
bin="${1:-target/release/botwire}"
examples="${2:-30}"
dir="$(mktemp -d)"
port="$(free_port)"
# Endpoint URLs are generated: with the system resolver off, their names
# fail as "dns" without a lookup instead of reaching a DNS server.
BOTWIRE_DELIVERY_SYSTEM_DNS=false "$bin" serve --listen "127.0.0.1:$port" --database "sqlite://$dir/st.db" >"$dir/out.txt" 2>"$dir/err.txt" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do
    grep -qoE 'bw_[A-Za-z0-9_-]{43}' "$dir/out.txt" 2>/dev/null && break
    sleep 0.1
done
key="$(grep -oE 'bw_[A-Za-z0-9_-]{43}' "$dir/out.txt" | head -n 1 || true)"
if [ -z "$key" ]; then
    echo "schemathesis.sh: the server did not print an admin key" >&2
    cat "$dir/err.txt" >&2
    exit 1
fi
"$bin" bots import examples/elipackage.yaml --database "sqlite://$dir/st.db" >/dev/null 2>&1
st run "http://127.0.0.1:$port/openapi.json" -H "Authorization: Bearer $key" \
    --max-examples "$examples" --workers 2 \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
