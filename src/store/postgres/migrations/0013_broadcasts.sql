-- Broadcasts: one message to every contact a segment matches when the
-- broadcast starts. `message` is the JSON of what to send (a text with
-- merge tags, and on WhatsApp an optional template). Recipients are
-- materialised once, at the start, one row each; a row leaves `pending`
-- in the same transaction that writes its outbox message, so a crash
-- never sends a recipient twice.
CREATE TABLE broadcasts (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    segment_id TEXT NOT NULL,
    message TEXT NOT NULL,
    state TEXT NOT NULL,
    schedule_at BIGINT NOT NULL,
    rate BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX broadcasts_by_bot ON broadcasts (account_id, bot_id, id);
CREATE INDEX broadcasts_by_state ON broadcasts (state, schedule_at);
CREATE TABLE broadcast_recipients (
    broadcast_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    message_id TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (broadcast_id, contact_id)
);
CREATE INDEX broadcast_recipients_by_status ON broadcast_recipients (broadcast_id, status, contact_id);
