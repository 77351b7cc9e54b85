-- The Idempotency-Key moves to its own table, as on PostgreSQL, where the
-- events table is partitioned and can take no unique index without its id:
-- one store code path on both backends.

CREATE TABLE event_keys (
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    PRIMARY KEY (account_id, bot_id, idempotency_key)
);
CREATE INDEX event_keys_by_event ON event_keys (event_id);
INSERT INTO event_keys (account_id, bot_id, idempotency_key, event_id, request_hash)
    SELECT account_id, bot_id, idempotency_key, id, COALESCE(request_hash, '')
    FROM events WHERE idempotency_key IS NOT NULL;
DROP INDEX events_by_idempotency_key;
ALTER TABLE events DROP COLUMN idempotency_key;
ALTER TABLE events DROP COLUMN request_hash;
