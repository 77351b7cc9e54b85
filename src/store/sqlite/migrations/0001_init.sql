-- botwire schema, SQLite. Times are Unix milliseconds; ids and JSON are TEXT.

CREATE TABLE server_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    bot_id TEXT,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_account ON api_keys (account_id, id);

CREATE TABLE bots (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    flow_version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, id)
);

-- Flows are versioned: every save is a new row; bots.flow_version points at
-- the current one. Conversations remember the version they run on.
CREATE TABLE flows (
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, bot_id, version)
);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    phone TEXT,
    external_id TEXT,
    attributes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX contacts_by_phone ON contacts (account_id, bot_id, phone) WHERE phone IS NOT NULL;
CREATE UNIQUE INDEX contacts_by_external_id ON contacts (account_id, bot_id, external_id) WHERE external_id IS NOT NULL;

-- revision guards against lost updates: a turn commits only if the row is
-- still at the revision the turn started from.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    flow_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX conversations_by_bot ON conversations (account_id, bot_id, id);
CREATE INDEX conversations_by_contact ON conversations (contact_id, id);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

-- The outbox: written in the same transaction as the change that caused it.
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    type TEXT NOT NULL,
    conversation_id TEXT,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT
);
CREATE INDEX events_by_account ON events (account_id, id);
CREATE INDEX events_by_bot ON events (account_id, bot_id, id);
CREATE INDEX events_by_type ON events (account_id, type, id);
CREATE UNIQUE INDEX events_by_idempotency_key ON events (account_id, bot_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- One row per booked seat; the partial unique index is what makes a second
-- booking of a full slot impossible, whatever the concurrency.
CREATE TABLE appointments (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    slot_start BIGINT NOT NULL,
    slot_end BIGINT NOT NULL,
    seat BIGINT NOT NULL,
    label TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    conversation_id TEXT,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    cancelled_at BIGINT
);
CREATE UNIQUE INDEX appointments_one_per_seat ON appointments (account_id, bot_id, slot_start, seat) WHERE status = 'booked';
CREATE INDEX appointments_by_bot ON appointments (account_id, bot_id, slot_start);
