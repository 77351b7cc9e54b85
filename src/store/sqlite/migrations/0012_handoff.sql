-- Handoff to a person and the inbox. A conversation's status is now
-- active, handoff (a person answers; the bot is silent) or completed; it
-- remembers the channel it happens on (api, web, or a messaging channel's
-- kind), filled in for existing rows from their contact's id; the inbox
-- lists conversations by last activity.
ALTER TABLE conversations ADD COLUMN channel TEXT NOT NULL DEFAULT 'api';
UPDATE conversations SET channel = COALESCE((
    SELECT CASE
        WHEN c.external_id LIKE 'web:%' THEN 'web'
        WHEN c.external_id LIKE 'whatsapp:%' THEN 'whatsapp'
        WHEN c.external_id LIKE 'telegram:%' THEN 'telegram'
        WHEN c.external_id LIKE 'twilio:%' THEN 'twilio'
        WHEN c.external_id LIKE 'messenger:%' THEN 'messenger'
        ELSE 'api' END
    FROM contacts c WHERE c.id = conversations.contact_id), 'api');
CREATE INDEX conversations_by_activity ON conversations (account_id, updated_at, id);
CREATE INDEX channel_contacts_by_contact ON channel_contacts (contact_id, last_inbound_at);
