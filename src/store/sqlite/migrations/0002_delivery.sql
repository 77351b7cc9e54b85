-- Event delivery: endpoints, one delivery per (event, endpoint), and every
-- attempt of every delivery. Times are Unix milliseconds; JSON is TEXT.

-- An endpoint receives a bot's events. event_types is a JSON array of type
-- names, NULL for every type. secrets is a JSON array of
-- {"secret": "whsec_…", "expires_at": ms|null}, newest first: during a
-- rotation the previous secret keeps signing until it expires. kind is
-- 'endpoint' (API), 'registration' (the chatbot-webhook route, one per bot)
-- or 'hook' (a REST hook subscription). first_failure_at is the first
-- failure since the last success; it drives the automatic disable.
CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    event_types TEXT,
    enabled BOOLEAN NOT NULL,
    disabled_reason TEXT,
    disabled_at BIGINT,
    headers TEXT NOT NULL DEFAULT '{}',
    body TEXT NOT NULL DEFAULT '{}',
    format TEXT NOT NULL,
    rate_limit BIGINT,
    secrets TEXT NOT NULL,
    kind TEXT NOT NULL,
    first_failure_at BIGINT,
    last_success_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX endpoints_by_bot ON endpoints (account_id, bot_id, id);
CREATE UNIQUE INDEX endpoints_one_registration ON endpoints (account_id, bot_id) WHERE kind = 'registration';

-- One row per (event, endpoint), written in the event's own transaction.
-- status: pending (never tried), failed (will be retried at
-- next_attempt_at), succeeded, dead (out of attempts). A worker owns a row
-- while locked_until is in the future; an expired lease makes it claimable
-- again, so a crashed worker's deliveries come back.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_until BIGINT,
    locked_by TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_by_event ON deliveries (event_id, id);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status IN ('pending', 'failed');

-- Every HTTP attempt. request_headers is a JSON object with secret-looking
-- values redacted; response_body holds at most 16 KiB.
CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    request_headers TEXT NOT NULL,
    status BIGINT,
    response_body TEXT NOT NULL DEFAULT '',
    error_kind TEXT,
    error_message TEXT
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, started_at);
