-- Publishable keys: scoped to one bot and to chatting only, usable from the
-- website origins listed on the key (a JSON array of origins).
ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'secret';
ALTER TABLE api_keys ADD COLUMN origins TEXT NOT NULL DEFAULT '[]';
