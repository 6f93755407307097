-- Keyed audit chain (issue 14). The head's MAC (HMAC under GATEHOUSE_AUDIT_KEY over seq and
-- hash) makes pointing the head at another event need the key; NULL while the chain is unkeyed.
ALTER TABLE audit_head ADD COLUMN mac TEXT;

-- Checkpoints: "the chain had seq events ending in hash at at", MAC'd when a key is configured.
-- Written by verification (the point the next incremental verification starts from) and by the
-- periodic checkpoint task (also sent to the log and the BigQuery export).
CREATE TABLE audit_checkpoints (
    seq     BIGINT PRIMARY KEY NOT NULL,
    hash    TEXT NOT NULL,
    at      BIGINT NOT NULL,
    key_id  TEXT,
    mac     TEXT
);
