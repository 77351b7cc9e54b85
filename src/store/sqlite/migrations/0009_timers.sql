-- Conversation timers: a waiting node's reminder and timeout, and the bot's
-- expiry of idle conversations. Written in the same transaction as the turn
-- that sets them (a turn replaces all of its conversation's timers), claimed
-- when due with a lease like deliveries, deleted when fired. An idle
-- conversation costs one row here and nothing in memory until it is due.

CREATE TABLE timers (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT,
    due_at BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX timers_due ON timers (due_at);
CREATE INDEX timers_conversation ON timers (conversation_id);
