-- Named leases: one holder at a time (reconciliation runs on one replica per period).
-- expires_at is microseconds since the Unix epoch, from the database's clock.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
