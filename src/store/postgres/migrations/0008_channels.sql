-- Messaging channels (PostgreSQL): one platform account (WhatsApp, Telegram, Twilio,
-- Messenger) bound to one bot, the messages people send through it, and
-- the bot's replies waiting to go out. Times are Unix milliseconds; ids
-- and JSON are TEXT.

-- config is the channel's settings as JSON, secrets included (the API
-- never returns them). The last_* columns say how its traffic fares.
CREATE TABLE channels (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    last_inbound_at BIGINT,
    last_inbound_error TEXT,
    last_outbound_at BIGINT,
    last_outbound_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX channels_by_bot ON channels (account_id, bot_id, id);

-- One row per person per channel: which contact they are, and when they
-- last wrote (WhatsApp's 24-hour customer-service window runs from it).
CREATE TABLE channel_contacts (
    channel_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    phone TEXT,
    name TEXT,
    last_inbound_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, user_id)
);

-- Every message received, written before the platform gets its 200 and
-- processed after: pending until its chat turn commits (done, in the same
-- transaction) or it cannot be (failed, with the reason). The unique index
-- on the platform's message id is what processes each message once,
-- whatever the platform's retries. A worker holds a pending row while
-- locked_until is in the future.
CREATE TABLE channel_inbound (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    locked_until BIGINT,
    locked_by TEXT,
    received_at BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE UNIQUE INDEX channel_inbound_once ON channel_inbound (channel_id, message_id);
CREATE INDEX channel_inbound_pending ON channel_inbound (received_at) WHERE status = 'pending';

-- The outbox of replies: written in the chat turn's transaction, sent in
-- order per lane (a conversation), one at a time. status: pending (not yet
-- tried), retrying (next_attempt_at), sent, delivered, read (the platform's
-- reports), failed (for good, with last_error).
CREATE TABLE channel_messages (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    lane TEXT NOT NULL,
    conversation_id TEXT,
    contact_id TEXT,
    recipient TEXT NOT NULL,
    op TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    platform_message_id TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    locked_until BIGINT,
    locked_by TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX channel_messages_due ON channel_messages (next_attempt_at) WHERE status IN ('pending', 'retrying');
CREATE INDEX channel_messages_by_lane ON channel_messages (lane, id);
CREATE INDEX channel_messages_by_channel ON channel_messages (channel_id, id);
CREATE INDEX channel_messages_by_platform_id ON channel_messages (channel_id, platform_message_id) WHERE platform_message_id IS NOT NULL;

-- Every send attempt of an outbox message.
CREATE TABLE channel_attempts (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status BIGINT,
    response_body TEXT NOT NULL DEFAULT '',
    error_kind TEXT,
    error_message TEXT,
    node TEXT
);
CREATE INDEX channel_attempts_by_message ON channel_attempts (message_id, id);

-- A channel contact carries the phone the platform gave next to its
-- channel id (whatsapp:525500000000): phone numbers are unique only among
-- contacts known by their phone alone.
DROP INDEX contacts_by_phone;
CREATE UNIQUE INDEX contacts_by_phone ON contacts (account_id, bot_id, phone) WHERE phone IS NOT NULL AND external_id IS NULL;
