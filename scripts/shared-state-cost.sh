#!/bin/sh
# What sharing per-node state through PostgreSQL would cost: pgbench runs,
# on a scratch database, the one statement each shared piece would add,
#   * visitor limit: an upsert of a (key, address, minute) counter per chat
#     message from a publishable key;
#   * circuit breaker: an update of the endpoint's failure streak per
#     delivery attempt (and a read of it per claim);
# each as its own transaction (the worst case: in the product it would ride
# in a transaction the message or the recorder already commits), with 4
# clients for 10 s each. For the capacity plan (docs/SCALING.md) it also
# times a one-row insert per transaction without and with a NOTIFY in it
# (what a commit that writes deliveries for other workers pays), with 8
# clients. Prints pgbench's latency and transactions/s.
# Usage: scripts/shared-state-cost.sh (ADMIN_URL overrides the server).
# Only loopback is used.
set -eu
admin=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
db="botwire_shared_$$"
dir=$(mktemp -d)
psql "$admin" -qAtc "CREATE DATABASE $db"
trap 'psql "$admin" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$dir"' EXIT
psql "$base/$db" -qAt <<'SQL'
CREATE TABLE visitor_windows (
    key_id TEXT NOT NULL, client TEXT NOT NULL, minute BIGINT NOT NULL,
    messages INTEGER NOT NULL, PRIMARY KEY (key_id, client, minute));
CREATE TABLE endpoint_circuits (
    endpoint_id TEXT PRIMARY KEY, failures INTEGER NOT NULL,
    open_until BIGINT);
CREATE TABLE rows_written (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO endpoint_circuits
    SELECT 'ep_' || g, 0, NULL FROM generate_series(1, 1000) g;
SQL
cat >"$dir/visitor.sql" <<'SQL'
\set v random(1, 10000)
INSERT INTO visitor_windows VALUES ('key_1', 'addr_' || :v, extract(epoch from now())::bigint / 60, 1)
ON CONFLICT (key_id, client, minute) DO UPDATE SET messages = visitor_windows.messages + 1
RETURNING messages;
SQL
cat >"$dir/circuit.sql" <<'SQL'
\set e random(1, 1000)
UPDATE endpoint_circuits SET failures = failures + 1 WHERE endpoint_id = 'ep_' || :e
RETURNING failures, open_until;
SQL
cat >"$dir/read.sql" <<'SQL'
\set e random(1, 1000)
SELECT failures, open_until FROM endpoint_circuits WHERE endpoint_id = 'ep_' || :e;
SQL
cat >"$dir/commit.sql" <<'SQL'
INSERT INTO rows_written (body) VALUES ('event');
SQL
cat >"$dir/notify.sql" <<'SQL'
BEGIN;
INSERT INTO rows_written (body) VALUES ('event');
NOTIFY botwire_scratch;
COMMIT;
SQL
run() {
    echo "== $1 ($2 clients, 10 s)"
    pgbench -n -c "$2" -j 2 -T 10 -f "$dir/$1.sql" "$base/$db" 2>&1 |
        grep -E "latency average|^tps|number of transactions actually"
}
run visitor 4
run circuit 4
run read 4
run commit 8
run notify 8
