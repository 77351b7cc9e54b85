-- When a send of an outbox message began. Set (by the node holding the
-- message's lease, in one write for a batch) just before the platform is
-- called, and cleared by the recorded outcome. A row still marked once its
-- lease has run out belongs to a process that stopped mid-send: the
-- platforms take no idempotency key, so it is never sent again but
-- settled as failed ("interrupted").
ALTER TABLE channel_messages ADD COLUMN sending_at BIGINT;
CREATE INDEX channel_messages_in_doubt ON channel_messages (locked_until) WHERE sending_at IS NOT NULL;
