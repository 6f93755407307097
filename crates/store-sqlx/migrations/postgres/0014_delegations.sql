-- Delegations of approving (docs/delegation-escalation.md): an approver lets another person of
-- the same Slack workspace approve and deny for them until `until_at`. Revoking sets
-- `revoked_at`; rows are kept for the record (the audit trail has the events).
CREATE TABLE delegations (
    id              TEXT PRIMARY KEY,
    team_id         TEXT NOT NULL,
    delegator_id    TEXT NOT NULL,
    delegator_name  TEXT NOT NULL,
    delegate_id     TEXT NOT NULL,
    delegate_name   TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    until_at        BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoked_by      TEXT
);
-- An approval click reads the clicker's delegations; `delegations` reads the caller's given ones.
CREATE INDEX delegations_delegate ON delegations (team_id, delegate_id, created_at);
CREATE INDEX delegations_delegator ON delegations (team_id, delegator_id, created_at);
