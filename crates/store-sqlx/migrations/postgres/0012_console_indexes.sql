-- Console: history filtered by person (Slack user id or e-mail) reads an index, not the table.
CREATE INDEX requests_user ON requests (user_id, created_at);
CREATE INDEX requests_email ON requests (email, created_at);
-- Console: the live grants page, newest first (all workspaces, or one), read in index order
-- instead of sorting every live grant. "Live" is written as NOT IN the three final statuses, the
-- same text the query uses: SQLite uses a partial index only when the query implies its WHERE,
-- and with `status IN (…live…)` it preferred grants_status and sorted (136 ms at 10,000 live
-- grants against 1 ms for other pages, `cargo bench --bench console_pages`).
CREATE INDEX grants_live_created ON grants (created_at, id)
    WHERE status NOT IN ('revoked', 'expired', 'failed');
CREATE INDEX grants_live_team ON grants (team_id, created_at, id)
    WHERE status NOT IN ('revoked', 'expired', 'failed');
