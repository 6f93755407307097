-- Issue 13: the job queue's indexes hold only the jobs their readers look for. A job is read by
-- state (the claim: pending and due, or running with a lapsed lease; the order check: pending or
-- running jobs of a key; the gauges: pending, running and dead), never by "done", yet every
-- state-leading index held every finished job too, and every job that finished wrote a new entry
-- into each of them. Partial indexes drop out a job as it finishes: completing a job now touches
-- the primary key and jobs_kind only, a claim or a claimed insert no longer touches the due
-- indexes, and the indexes stay as small as the live queue however many jobs are done.
-- The readers name the state as a literal (`status = 'pending'`, `status IN ('pending',
-- 'running')`), which is what lets both planners use a partial index (store::plans checks it).
-- A claim of every kind but a few reads the stored kinds one by one and the ranges between them
-- (store::jobs::all_but_by_kind), which covers every kind only if the database orders kind names
-- as Rust and SQLite do: byte by byte. A database created with a language collation
-- (en_US.UTF-8 ignores `_` at first) would not, so the column compares in "C" (its indexes are
-- rebuilt; the rows are not rewritten).
ALTER TABLE jobs ALTER COLUMN kind TYPE TEXT COLLATE "C";
DROP INDEX jobs_due;
DROP INDEX jobs_due_kind;
DROP INDEX jobs_lease;
DROP INDEX jobs_order;
CREATE INDEX jobs_due ON jobs (run_at, id, kind) WHERE status = 'pending';
CREATE INDEX jobs_due_kind ON jobs (kind, run_at, id) WHERE status = 'pending';
CREATE INDEX jobs_lease ON jobs (locked_until) WHERE status = 'running';
CREATE INDEX jobs_order ON jobs (order_key, order_seq) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_dead ON jobs (kind) WHERE status = 'dead';
