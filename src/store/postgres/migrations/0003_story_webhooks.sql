-- Story webhooks: the bot's signing secrets for calls made from flows, and
-- the log of every call.

ALTER TABLE bots ADD COLUMN story_secrets TEXT NOT NULL DEFAULT '[]';

CREATE TABLE webhook_calls (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    conversation_id TEXT,
    outcome TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_calls_by_webhook ON webhook_calls (account_id, bot_id, webhook, id);
CREATE INDEX webhook_calls_by_conversation ON webhook_calls (conversation_id, id);
