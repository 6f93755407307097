-- Break-glass (issue 17): one row per emergency grant, written in the transaction that grants
-- it, and its review by an approver afterwards. Unreviewed rows (reviewed_at IS NULL) are what
-- the admin API, the monthly report and the gatehouse_emergency_grants_unreviewed metric show.
CREATE TABLE emergency_grants (
    request_id      TEXT PRIMARY KEY NOT NULL REFERENCES requests (id),
    grant_id        TEXT NOT NULL,
    team_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    email           TEXT,
    name            TEXT NOT NULL,
    resource        TEXT NOT NULL,
    duration_secs   BIGINT NOT NULL,
    justification   TEXT NOT NULL,
    granted_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    reviewed_at     BIGINT,
    reviewed_by     TEXT,
    reviewed_by_id  TEXT,
    outcome         TEXT
);
CREATE INDEX emergency_grants_granted ON emergency_grants (granted_at, request_id);
CREATE INDEX emergency_grants_unreviewed ON emergency_grants (granted_at, request_id)
    WHERE reviewed_at IS NULL;
