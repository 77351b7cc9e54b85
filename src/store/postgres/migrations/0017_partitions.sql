-- Time partitioning of events, deliveries and attempts, so that retention
-- drops whole partitions instead of deleting rows (see
-- store::retention::partitions).
--
-- Every id is time-sortable (domain::ids: `prefix_` and ten base-32
-- characters of Unix milliseconds first), so the tables are partitioned by
-- RANGE on id: the ids of [t0, t1) are those from id_floor(t0) to
-- id_floor(t1). The primary key stays (id), and `WHERE id = $1` reaches one
-- partition. The id columns (and the ids that point at rows of these
-- tables) are COLLATE "C", so that text order is byte order is time order.
-- A DEFAULT partition takes ids of any other shape, or of a period that has
-- no partition yet.
--
-- A partitioned table takes no unique index without its partition key, so
-- the Idempotency-Key moves to its own table, event_keys.

CREATE TABLE event_keys (
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    request_hash TEXT NOT NULL,
    PRIMARY KEY (account_id, bot_id, idempotency_key)
);
CREATE INDEX event_keys_by_event ON event_keys (event_id);
INSERT INTO event_keys (account_id, bot_id, idempotency_key, event_id, request_hash)
    SELECT account_id, bot_id, idempotency_key, id, COALESCE(request_hash, '')
    FROM events WHERE idempotency_key IS NOT NULL;

CREATE TABLE events_partitioned (
    id TEXT COLLATE "C" NOT NULL,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    type TEXT NOT NULL,
    conversation_id TEXT,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    trace_id TEXT,
    CONSTRAINT events_partitioned_pkey PRIMARY KEY (id)
) PARTITION BY RANGE (id);

CREATE TABLE deliveries_partitioned (
    id TEXT COLLATE "C" NOT NULL,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_until BIGINT,
    locked_by TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT deliveries_partitioned_pkey PRIMARY KEY (id)
) PARTITION BY RANGE (id);

CREATE TABLE attempts_partitioned (
    id TEXT COLLATE "C" NOT NULL,
    delivery_id TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    request_headers TEXT NOT NULL,
    status BIGINT,
    response_body TEXT NOT NULL DEFAULT '',
    error_kind TEXT,
    error_message TEXT,
    node TEXT,
    CONSTRAINT attempts_partitioned_pkey PRIMARY KEY (id)
) PARTITION BY RANGE (id);

-- The id floor of domain::ids, for the partitions of the rows there are.
CREATE FUNCTION pg_temp.botwire_id_floor(prefix TEXT, ms BIGINT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    alphabet CONSTANT TEXT := '0123456789abcdefghjkmnpqrstvwxyz';
    body TEXT := '';
    v BIGINT := LEAST(GREATEST(ms, 0), 281474976710655);
BEGIN
    FOR i IN 1..10 LOOP
        body := substr(alphabet, (v % 32)::INT + 1, 1) || body;
        v := v / 32;
    END LOOP;
    RETURN prefix || '_' || body;
END $$;

-- One partition a UTC day (the default width) for every day the old table
-- has rows of, and the day after its last; then the rows move over.
CREATE FUNCTION pg_temp.botwire_partition(tab TEXT, prefix TEXT, at TEXT, cols TEXT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    d BIGINT;
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', tab || '_default', tab || '_partitioned');
    FOR d IN EXECUTE format(
        'SELECT DISTINCT day FROM (SELECT %I / 86400000 AS day FROM %I
                                   UNION SELECT MAX(%I) / 86400000 + 1 FROM %I) days
         WHERE day IS NOT NULL AND day >= 0 AND day < 3000000 ORDER BY day',
        at, tab, at, tab)
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            tab || '_p' || to_char(to_timestamp(d * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD'),
            tab || '_partitioned',
            pg_temp.botwire_id_floor(prefix, d * 86400000),
            pg_temp.botwire_id_floor(prefix, (d + 1) * 86400000));
    END LOOP;
    EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM %I', tab || '_partitioned', cols, cols, tab);
    EXECUTE format('DROP TABLE %I', tab);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tab || '_partitioned', tab);
    EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', tab, tab || '_partitioned_pkey', tab || '_pkey');
END $$;

SELECT pg_temp.botwire_partition('events', 'evt', 'created_at',
    'id, account_id, bot_id, type, conversation_id, data, created_at, trace_id');
SELECT pg_temp.botwire_partition('deliveries', 'dlv', 'created_at',
    'id, account_id, bot_id, endpoint_id, event_id, status, attempts, next_attempt_at,
     locked_until, locked_by, last_error, created_at, updated_at');
SELECT pg_temp.botwire_partition('attempts', 'att', 'started_at',
    'id, delivery_id, endpoint_id, account_id, started_at, duration_ms, request_headers,
     status, response_body, error_kind, error_message, node');
DROP FUNCTION pg_temp.botwire_partition(TEXT, TEXT, TEXT, TEXT);
DROP FUNCTION pg_temp.botwire_id_floor(TEXT, BIGINT);

-- The indexes of migrations 0001, 0002, 0005 and 0016, now on every
-- partition (none of them unique).
CREATE INDEX events_by_account ON events (account_id, id);
CREATE INDEX events_by_bot ON events (account_id, bot_id, id);
CREATE INDEX events_by_type ON events (account_id, type, id);
CREATE INDEX events_by_age ON events (created_at, id);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_by_event ON deliveries (event_id, id);
CREATE INDEX deliveries_due_by_endpoint ON deliveries (endpoint_id, next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, started_at);
CREATE INDEX attempts_by_age ON attempts (started_at);
