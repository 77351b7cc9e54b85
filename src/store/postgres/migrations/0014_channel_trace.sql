-- The W3C trace id of the request that brought an inbound message, and of
-- the turn or request that caused an outbound one, so the platform call
-- (retries included, in any process) continues that trace.
ALTER TABLE channel_inbound ADD COLUMN trace_id TEXT;
ALTER TABLE channel_messages ADD COLUMN trace_id TEXT;
