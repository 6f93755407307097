-- Issue 17. Per-person request limits (docs/rate-limits.md): filing a request counts the
-- person's pending requests (and the earliest time one of them times out) in the same statement
-- that reads their live grant. This partial index holds only pending requests, so that count
-- reads the few the person has waiting, not their whole history. The `status = 'pending'` text
-- is the one the query uses (SQLite uses a partial index only when the query implies its WHERE).
CREATE INDEX requests_pending_subject ON requests (team_id, user_id, pending_until)
    WHERE status = 'pending';
-- `/access admin audit @user` (docs/admin-commands.md): the person's newest events as actor
-- (what they approved, revoked, …), read newest first next to `audit_subject`.
CREATE INDEX audit_actor ON audit_events (actor_id, seq);
