#!/usr/bin/env python3
"""Capacity plan for botwire: what one PostgreSQL server carries, and the
nodes, PostgreSQL clusters and WAL per second a target event rate needs.

Plain Python 3, no packages. The inputs are the named constants below, each
with where it was measured (or marked ASSUMED when it is a planning guess,
not a measurement); every one can be overridden from the command line,
e.g. `scripts/capacity.py --app-cpu-ms-per-event 0.15 --target 500000`.
The tables in docs/SCALING.md are this script's output (`--markdown`).

An "event" is one published event delivered to one endpoint with its
attempt recorded (what `botwire bench deliver` does with one endpoint).
"""

import argparse
import math

# ---------------------------------------------------------------- measured
# scripts/wal-per-event.sh on 2026-12-07, PostgreSQL 15.20, 2 cores shared
# by the database, botwire and the bench's publisher and receiver; 10,000
# events, release build, after the writer's pipelining, joined inserts and
# one write per batch of publishes (and the partitioned tables). WAL of the
# scratch database alone, summed with pg_walinspect: 3,459-3,486
# bytes/event (3,281-3,498 before those changes: the rows and index
# entries are the same); no checkpoint fell in the runs, so no full-page
# images are in it (see FPI_FACTOR). Build-independent.
WAL_BYTES_PER_EVENT = 3_470
# Same runs: commits of the scratch database (pg_stat_database.xact_commit,
# read-only ones included) per event, with 64 publishes in flight; group
# commit makes this fall as load rises (0.06-0.12 before).
COMMITS_PER_EVENT = 0.05
# Same run: CPU time of the PostgreSQL server processes serving the scratch
# database, sampled from /proc (WAL writer and checkpointer not included):
# 1.24 s / 10,000 events. It was 0.566-0.605 ms with one statement and one
# round trip at a time, a savepoint per write and a query of the endpoints
# per event: the server's work per statement, not the rows, was most of it.
PG_CPU_MS_PER_EVENT = 0.124
# Same run: CPU of the botwire process per event, DEBUG build (API, store,
# engine, plus the bench's own publisher and receiver): 9.31 s / 10,000.
APP_CPU_MS_PER_EVENT_DEBUG = 0.93
# docs/DELIVERY.md benchmark, RELEASE build, SQLite, 2 cores: 10,500-12,400
# events/s with the publisher and receiver in the same process and the two
# cores busy: 2 cores / 11,000 events/s. An upper bound of a release node's
# CPU per event (it includes SQLite's work and the bench's own).
APP_CPU_MS_PER_EVENT_RELEASE = 2 * 1000 / 11_000
# Same run: connections one `botwire serve` node holds (writer, read pool
# of 8, the LISTEN connection), most seen at once in pg_stat_activity.
CONNECTIONS_PER_NODE = 10
# Same run: table and index bytes left per event (events, deliveries,
# attempts and their 11 indexes; 2,249 bytes), before any retention.
STORED_BYTES_PER_EVENT = 2_249
# scripts/shared-state-cost.sh, same machine and day: pgbench, one-row
# INSERT per transaction, 8 clients: 3,025 commits/s (2.6 ms each); the
# same with a NOTIFY in each transaction: 896/s (8.9 ms). A NOTIFY holds a
# cluster-wide lock from before the commit's flush to its end, so such
# commits do not share flushes: their rate is one over the flush time,
# whatever the cores.
COMMITS_PER_S_MEASURED = 3_025
NOTIFY_COMMITS_PER_S_MEASURED = 896
# The cores of the machine those figures were taken on.
MEASURED_ON_CORES = 2

# ---------------------------------------------------------------- assumed
# The plan's hardware and headroom. ASSUMED: planning choices, not
# measurements; change them to the hardware you buy.
TARGET_EVENTS_PER_S = 1_000_000
APP_NODE_CORES = 8  # ASSUMED: cores of one botwire node
APP_NODE_UTILISATION = 0.6  # ASSUMED: run nodes at 60 % CPU at peak
PG_SERVER_CORES = 32  # ASSUMED: cores of one PostgreSQL primary
PG_UTILISATION = 0.6  # ASSUMED: run primaries at 60 % CPU at peak
# ASSUMED: sustained WAL a primary can write, stream to one replica and
# archive (NVMe, 10 GbE); the figure most worth measuring on real hardware.
PG_WAL_MB_PER_S_LIMIT = 150
# ASSUMED: steady-state WAL is larger than the measured figure by the full
# page images written after each checkpoint. Bound measured with
# CHECKPOINT_EVERY=5 scripts/wal-per-event.sh (a checkpoint every 5 s,
# 60-180x more often than a production checkpoint_timeout of 5-15 min):
# 6,108 bytes/event cluster-wide, a factor of 1.85. Ids are time-ordered,
# so most index inserts land on the few right-hand pages.
FPI_FACTOR = 1.3
# ASSUMED: connections a primary is given for botwire nodes (behind no
# pooler; a transaction pooler in front raises it).
PG_MAX_CONNECTIONS = 500
# Commits/s a primary sustains is taken as the measured figure times
# PG_SERVER_CORES / MEASURED_ON_CORES (ASSUMED: group commit lets more
# clients share each flush; the measured one is a 2-core VM's virtual disk).
# ASSUMED: how much faster a primary's WAL flush is than this machine's
# virtual disk (NVMe with power-loss protection); scales the NOTIFY ceiling,
# which cores do not.
FLUSH_SPEEDUP = 4
RETENTION_DAYS = 7  # ASSUMED: delivery history kept


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--markdown", action="store_true", help="print markdown tables")
    for name, value in sorted(globals().items()):
        if name.isupper() and isinstance(value, (int, float)):
            p.add_argument(
                "--" + name.lower().replace("_", "-"),
                type=type(value),
                default=value,
                metavar="N",
                help=f"(default {value:g})",
            )
    return p.parse_args()


def fmt(x):
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return f"{x:,}"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table(title, header, rows, markdown):
    if markdown:
        print(f"**{title}**\n")
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for r in rows:
            print("| " + " | ".join(fmt(c) for c in r) + " |")
    else:
        print(title)
        widths = [max(len(fmt(r[i])) for r in [header] + rows) for i in range(len(header))]
        for r in [header] + rows:
            print("  " + "  ".join(fmt(c).ljust(w) for c, w in zip(r, widths)))
    print()


def ceilings(a, cores, scale, flush, app_cpu):
    """Events/s at which each resource of one PostgreSQL primary runs out."""
    wal_per_event = a.wal_bytes_per_event * a.fpi_factor
    return [
        (
            "PostgreSQL CPU",
            cores * a.pg_utilisation * 1000 / a.pg_cpu_ms_per_event,
            f"{a.pg_cpu_ms_per_event} ms/event on {cores} cores at {a.pg_utilisation:.0%}",
        ),
        (
            "WAL write",
            a.pg_wal_mb_per_s_limit * 1e6 / wal_per_event,
            f"{wal_per_event:,.0f} B/event into {a.pg_wal_mb_per_s_limit} MB/s (assumed)",
        ),
        (
            "commits",
            a.commits_per_s_measured * scale / a.commits_per_event,
            f"{a.commits_per_event} commits/event, {a.commits_per_s_measured * scale:,.0f}/s",
        ),
        (
            "NOTIFY commits",
            a.notify_commits_per_s_measured * flush / a.commits_per_event,
            f"only with API-only nodes: {a.notify_commits_per_s_measured * flush:,.0f} NOTIFY commits/s",
        ),
        (
            "connections",
            a.pg_max_connections
            // a.connections_per_node
            * (a.app_node_cores * a.app_node_utilisation * 1000 / app_cpu),
            f"{a.pg_max_connections // a.connections_per_node} nodes x {a.connections_per_node} connections",
        ),
    ]


def main():
    a = parse_args()
    md = a.markdown
    app_release = a.app_cpu_ms_per_event_release
    node_eps = a.app_node_cores * a.app_node_utilisation * 1000 / app_release

    # 1. This machine: where one PostgreSQL on 2 cores stops.
    here = ceilings(a, a.measured_on_cores, 1.0, 1.0, app_release)
    rows = [(n, e, why) for n, e, why in sorted(here, key=lambda r: r[1])]
    table(
        f"One PostgreSQL on the measured machine ({a.measured_on_cores} cores, "
        "database alone on them): events/s at which each resource runs out",
        ["resource", "events/s", "from"],
        rows,
        md,
    )

    # 2. One large primary.
    scale = a.pg_server_cores / a.measured_on_cores
    big = ceilings(a, a.pg_server_cores, scale, a.flush_speedup, app_release)
    big.sort(key=lambda r: r[1])
    table(
        f"One PostgreSQL primary of {a.pg_server_cores} cores: "
        "events/s at which each resource runs out",
        ["resource", "events/s", "from"],
        [(n, e, why) for n, e, why in big],
        md,
    )
    per_cluster, binding = big[0][1], big[0][0]

    # 3. The plan for the target.
    clusters = math.ceil(a.target_events_per_s / per_cluster)
    per_cluster_load = a.target_events_per_s / clusters
    nodes_release = math.ceil(a.target_events_per_s / node_eps)
    node_eps_debug = a.app_node_cores * a.app_node_utilisation * 1000 / a.app_cpu_ms_per_event_debug
    nodes_debug = math.ceil(a.target_events_per_s / node_eps_debug)
    nodes_per_cluster = math.ceil(nodes_release / clusters)
    wal_total = a.target_events_per_s * a.wal_bytes_per_event * a.fpi_factor / 1e6
    stored_tb = a.target_events_per_s * a.stored_bytes_per_event * 86_400 * a.retention_days / 1e12
    table(
        f"Plan for {a.target_events_per_s:,} events/s",
        ["quantity", "value", "how"],
        [
            ("events/s one primary carries", per_cluster, f"first limit: {binding}"),
            ("PostgreSQL clusters (partitions)", clusters, "target / per primary"),
            ("events/s per cluster at target", per_cluster_load, ""),
            ("events/s one node carries (release)", node_eps,
             f"{a.app_node_cores} cores at {a.app_node_utilisation:.0%}, {app_release:.3f} ms/event"),
            ("botwire nodes (release)", nodes_release, f"{nodes_per_cluster} per cluster"),
            ("botwire nodes (debug figure, for scale)", nodes_debug,
             f"{a.app_cpu_ms_per_event_debug} ms/event"),
            ("connections per cluster", nodes_per_cluster * a.connections_per_node,
             f"limit {a.pg_max_connections}"),
            ("WAL MB/s, all clusters", wal_total, f"{a.wal_bytes_per_event} B x FPI {a.fpi_factor}"),
            ("WAL MB/s per cluster", wal_total / clusters, f"limit {a.pg_wal_mb_per_s_limit}"),
            ("PostgreSQL cores busy, all clusters", a.target_events_per_s * a.pg_cpu_ms_per_event / 1000, ""),
            (f"stored TB for {a.retention_days} days, all clusters", stored_tb, "before compression"),
        ],
        md,
    )


if __name__ == "__main__":
    main()
