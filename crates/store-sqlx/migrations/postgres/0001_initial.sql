-- Gatehouse schema, PostgreSQL flavour. Keep in step with ../sqlite/0001_initial.sql: the Rust code
-- runs the same SQL text on both, so column names and types must line up.
-- Ids are TEXT (UUID strings), timestamps BIGINT unix microseconds, JSON is TEXT.

CREATE TABLE requests (
    id             TEXT PRIMARY KEY NOT NULL,
    team_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    email          TEXT,
    name           TEXT NOT NULL,
    resource       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    duration_secs  BIGINT NOT NULL,
    justification  TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    pending_until  BIGINT,
    grant_id       TEXT,
    decided_by     TEXT,
    decided_by_id  TEXT,
    failure        TEXT,
    version        BIGINT NOT NULL
);
CREATE INDEX requests_subject ON requests (team_id, user_id, created_at);
CREATE INDEX requests_status ON requests (status, created_at);
CREATE INDEX requests_resource ON requests (resource, created_at);
CREATE INDEX requests_grant ON requests (grant_id);
CREATE INDEX requests_created ON requests (created_at);

CREATE TABLE decisions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  TEXT NOT NULL REFERENCES requests (id),
    actor_id    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    comment     TEXT,
    UNIQUE (request_id, actor_id)
);

CREATE TABLE grants (
    id               TEXT PRIMARY KEY NOT NULL,
    team_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    email            TEXT,
    name             TEXT NOT NULL,
    resource         TEXT NOT NULL,
    status           TEXT NOT NULL,
    provider_handle  TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    granted_at       BIGINT,
    expires_at       BIGINT NOT NULL,
    ended_at         BIGINT,
    request_id       TEXT NOT NULL REFERENCES requests (id),
    revoked_by       TEXT,
    version          BIGINT NOT NULL
);
-- At most one live grant per person and resource: the database, not the engine, is the last word.
CREATE UNIQUE INDEX grants_one_live ON grants (team_id, user_id, resource)
    WHERE status IN ('provisioning', 'active', 'revoking');
CREATE INDEX grants_status ON grants (status, expires_at);
CREATE INDEX grants_subject ON grants (team_id, user_id, created_at);
CREATE INDEX grants_resource ON grants (resource, created_at);
CREATE INDEX grants_created ON grants (created_at);

CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    status        TEXT NOT NULL,
    run_at        BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    max_attempts  BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    locked_until  BIGINT,
    claim_token   TEXT
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_lease ON jobs (status, locked_until);
CREATE INDEX jobs_kind ON jobs (kind, status);

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY NOT NULL,
    id          TEXT NOT NULL UNIQUE,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    subject     TEXT,
    resource    TEXT,
    request_id  TEXT,
    grant_id    TEXT,
    details     TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_at ON audit_events (at);
CREATE INDEX audit_kind ON audit_events (kind, seq);
CREATE INDEX audit_resource ON audit_events (resource, seq);
CREATE INDEX audit_subject ON audit_events (subject, seq);
CREATE INDEX audit_request ON audit_events (request_id, seq);

-- The newest sealed event. Deleting the newest rows of audit_events leaves this behind, which is
-- how verification notices a truncated chain.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE message_refs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    team_id     TEXT NOT NULL,
    channel     TEXT NOT NULL,
    ts          TEXT NOT NULL,
    UNIQUE (request_id, purpose, channel)
);

CREATE TABLE idempotency_keys (
    key         TEXT PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Slack installations (multi-workspace OAuth). Tokens are encrypted by the application before
-- they reach the database.
CREATE TABLE slack_installations (
    id                               TEXT PRIMARY KEY NOT NULL,
    team_id                          TEXT,
    enterprise_id                    TEXT,
    is_enterprise_install            BOOLEAN NOT NULL DEFAULT FALSE,
    app_id                           TEXT,
    team_name                        TEXT,
    enterprise_name                  TEXT,
    enterprise_url                   TEXT,
    bot_user_id                      TEXT,
    bot_id                           TEXT,
    bot_scopes                       TEXT,
    bot_token_encrypted              BYTEA,
    bot_refresh_token_encrypted      BYTEA,
    bot_token_expires_at             BIGINT,
    user_id                          TEXT,
    user_scopes                      TEXT,
    user_token_encrypted             BYTEA,
    user_refresh_token_encrypted     BYTEA,
    user_token_expires_at            BIGINT,
    incoming_webhook_url_encrypted   BYTEA,
    incoming_webhook_channel         TEXT,
    incoming_webhook_channel_id      TEXT,
    incoming_webhook_configuration_url TEXT,
    installer_user_id                TEXT,
    installed_at                     BIGINT NOT NULL,
    updated_at                       BIGINT NOT NULL
);
CREATE UNIQUE INDEX slack_installations_owner
    ON slack_installations (COALESCE(enterprise_id, ''), COALESCE(team_id, ''));

CREATE TABLE oauth_states (
    state       TEXT PRIMARY KEY NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    consumed    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX oauth_states_expires ON oauth_states (expires_at);
