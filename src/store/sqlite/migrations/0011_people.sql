-- People: what filters over contacts need, and segments (saved filters).
-- Times are Unix milliseconds; ids and JSON are TEXT.

-- The channel a contact talks through (from its external id's prefix), its
-- last turn, and whether it asked not to be messaged.
ALTER TABLE contacts ADD COLUMN channel TEXT NOT NULL DEFAULT 'api';
ALTER TABLE contacts ADD COLUMN last_seen BIGINT;
ALTER TABLE contacts ADD COLUMN opted_out INTEGER NOT NULL DEFAULT 0;
UPDATE contacts SET last_seen = updated_at,
    channel = CASE
        WHEN external_id LIKE 'web:%' THEN 'web'
        WHEN external_id LIKE 'whatsapp:%' THEN 'whatsapp'
        WHEN external_id LIKE 'telegram:%' THEN 'telegram'
        WHEN external_id LIKE 'twilio:%' THEN 'twilio'
        WHEN external_id LIKE 'messenger:%' THEN 'messenger'
        ELSE 'api' END;
CREATE INDEX contacts_by_bot ON contacts (account_id, bot_id, id);
CREATE INDEX contacts_by_channel ON contacts (account_id, bot_id, channel, id);

-- One row per indexable attribute of a contact (strings up to 256 bytes,
-- numbers), rewritten with the contact's attributes in the same
-- transaction, so equality and range filters are answered from an index.
CREATE TABLE contact_attributes (
    contact_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    key TEXT NOT NULL,
    text_value TEXT,
    num_value REAL,
    PRIMARY KEY (contact_id, key)
);
CREATE INDEX contact_attributes_text ON contact_attributes (account_id, bot_id, key, text_value, contact_id);
CREATE INDEX contact_attributes_number ON contact_attributes (account_id, bot_id, key, num_value, contact_id);
INSERT INTO contact_attributes (contact_id, account_id, bot_id, key, text_value, num_value)
SELECT c.id, c.account_id, c.bot_id, j.key,
       CASE WHEN j.type = 'text' AND length(CAST(j.atom AS BLOB)) <= 256 THEN j.atom END,
       CASE WHEN j.type IN ('integer', 'real') THEN j.atom END
FROM contacts c, json_each(c.attributes) j
WHERE json_valid(c.attributes)
  AND (j.type IN ('integer', 'real') OR (j.type = 'text' AND length(CAST(j.atom AS BLOB)) <= 256));

-- Segments: a named filter (CEL over user and contact), counted live.
CREATE TABLE segments (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    name TEXT NOT NULL,
    filter TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX segments_by_bot ON segments (account_id, bot_id, id);
