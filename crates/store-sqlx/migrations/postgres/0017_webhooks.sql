-- Event webhooks (docs/webhooks.md): one row per configured webhook, its durable cursor over the
-- audit chain and its health. Kept in the database so a restart neither re-sends nor skips
-- events, and a webhook disabled after repeated failures stays disabled until an admin enables
-- it again. No URL and no secret here: those live in the configuration and the environment.
CREATE TABLE webhooks (
    id                    TEXT PRIMARY KEY NOT NULL,
    -- 1: delivering; 0: disabled after max_failures consecutive failures.
    enabled               BIGINT NOT NULL DEFAULT 1,
    -- seq of the last audit event delivered (or skipped by the webhook's filter).
    cursor_seq            BIGINT NOT NULL,
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    last_error            TEXT,
    last_success_at       BIGINT,
    disabled_at           BIGINT,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
