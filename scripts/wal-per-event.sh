#!/bin/sh
# WAL bytes, commits and rows written per delivered event on PostgreSQL:
# create a scratch database, read pg_current_wal_lsn() and the database's
# commit count, run `botwire bench deliver --database` on it (publish N
# events through the API, deliver each to one loopback endpoint), read them
# again, drop the database. WAL is cluster-wide, so anything else writing to
# the same server during the run is counted in the LSN difference; the
# records that touch this database's relations (and the commits of their
# transactions) are also summed apart with pg_walinspect (PostgreSQL 15+),
# by kind. While it runs, the database's connections are sampled every
# 0.2 s from pg_stat_activity (most at once; CPU time of their server
# processes from /proc, so PostgreSQL must run on this machine for that
# figure). It also prints the CPU time of the botwire process (API, store,
# engine, and the bench's own publisher and receiver) and the size of the
# tables and indexes the run left. WAL bytes do not depend on the build
# profile; events/s and CPU do. Only loopback is used.
# Usage: scripts/wal-per-event.sh [BINARY] [EVENTS]
#   (default target/debug/botwire, 5000; ADMIN_URL overrides the server;
#   CHECKPOINT_EVERY=S runs a CHECKPOINT every S seconds during the bench,
#   so the full-page images written after each checkpoint are counted too;
#   checkpoints recycle WAL segments, so then only the cluster-wide figure
#   is printed)
set -eu
bin=${1:-target/debug/botwire}
events=${2:-5000}
admin=${ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
base=${admin%/*}
db="botwire_wal_$$"
psql "$admin" -qAtc "CREATE DATABASE $db"
psql "$base/$db" -qAtc "CREATE EXTENSION IF NOT EXISTS pg_walinspect"
oid=$(psql "$admin" -qAtc "SELECT oid FROM pg_database WHERE datname = '$db'")
trap 'psql "$admin" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
lsn0=$(psql "$admin" -qAtc "SELECT pg_current_wal_lsn()")
c0=$(psql "$admin" -qAtc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
sample() {
    while :; do
        for pid in $(psql "$admin" -qAtc "SELECT pid FROM pg_stat_activity WHERE datname = '$db'"); do
            t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) && echo "$pid $t"
        done
        echo "n $(psql "$admin" -qAtc "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")"
        sleep 0.2
    done
}
sample >"/tmp/$db.samples" &
sampler=$!
checkpointer=
if [ -n "${CHECKPOINT_EVERY:-}" ]; then
    (while sleep "$CHECKPOINT_EVERY"; do psql "$admin" -qAtc "CHECKPOINT"; done) &
    checkpointer=$!
fi
/usr/bin/time -f "botwire process CPU: %U s user, %S s system, %e s wall" \
    "$bin" bench deliver --database "$base/$db" --events "$events" --rate 0 >"/tmp/$db.out" 2>&1
kill "$sampler"
[ -z "$checkpointer" ] || kill "$checkpointer"
# The statistics collector flushes about once a second.
sleep 2
lsn1=$(psql "$admin" -qAtc "SELECT pg_current_wal_lsn()")
c1=$(psql "$admin" -qAtc "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
wal=$(psql "$admin" -qAtc "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")
cat "/tmp/$db.out"
echo "events: $events"
echo "WAL bytes: $wal ($(echo "$wal / $events" | bc) per event)"
echo "commits: $((c1 - c0)) ($(echo "scale=2; ($c1 - $c0) / $events" | bc) per event)"
echo "WAL of this database alone (pg_walinspect), by kind:"
psql "$base/$db" -qAt -F ' ' <<SQL
WITH r AS (SELECT * FROM pg_get_wal_records_info('$lsn0', '$lsn1')),
ours AS (SELECT DISTINCT xid FROM r WHERE block_ref LIKE '%/$oid/%' AND xid <> '0'),
mine AS (SELECT * FROM r WHERE block_ref LIKE '%/$oid/%' OR xid IN (SELECT xid FROM ours))
SELECT rpad(resource_manager || '/' || split_part(record_type, ' ', 1), 22),
       count(*) AS records, sum(record_length) AS bytes, sum(fpi_length) AS fpi_bytes,
       round(sum(record_length)::numeric / $events) AS per_event
FROM mine GROUP BY 1
UNION ALL
SELECT rpad('total', 22), count(*), sum(record_length), sum(fpi_length),
       round(sum(record_length)::numeric / $events) FROM mine
ORDER BY 3 DESC;
SQL
hz=$(getconf CLK_TCK)
awk -v hz="$hz" -v ev="$events" '
    $1 == "n" { if ($2 > most) most = $2; next }
    { last[$1] = $2 }
    END {
        for (p in last) cpu += last[p]
        printf "connections at most: %d\n", most
        printf "PostgreSQL server processes of this database, CPU: %.2f s (%.3f ms per event)\n", cpu / hz, cpu / hz * 1000 / ev
    }' "/tmp/$db.samples"
echo "tables and indexes left (bytes per event):"
psql "$base/$db" -qAt -F ' ' -c "SELECT rpad(c.relname, 40), c.relkind, pg_relation_size(c.oid), round(pg_relation_size(c.oid)::numeric / $events) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i') AND pg_relation_size(c.oid) > 100000 ORDER BY 3 DESC"
rm -f "/tmp/$db.out" "/tmp/$db.samples"
