-- Which Enterprise Grid organisation a workspace belongs to (learnt from installs and from
-- incoming payloads, which carry both ids). Kept in the store, not in memory, so that a restarted
-- server and gatehouse-cleanup find the org-wide install's token for a workspace.
CREATE TABLE slack_team_enterprises (
    team_id        TEXT PRIMARY KEY NOT NULL,
    enterprise_id  TEXT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- The workspace (or organisation) an install link was made for by a workspace-scoped admin
-- token; the callback refuses an installation into any other.
ALTER TABLE oauth_states ADD COLUMN bound_team TEXT;
