-- Scale (issue 13): a job claim reads `ORDER BY run_at, id LIMIT n` of the pending-and-due jobs
-- (and, separately, of the running jobs whose lease lapsed). Indexes ending in (run_at, id) serve
-- it in index order, so a claim of 500 reads about 500 index entries instead of every due job and
-- a sort of them. jobs_due (status, run_at) was the prefix of the first and is replaced by it
-- (NEXT_JOB_SQL, `ORDER BY run_at LIMIT 1` of the pending jobs, is served by it as before).
-- jobs_due_kind serves a claim scoped to one kind (or a few: one ordered read per kind). `kind`
-- at the end of jobs_due lets SQLite test an `AllBut` claim's `kind NOT IN (…)` on the index entry
-- while it walks past the due jobs of the excluded kinds, without reading their rows.
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (status, run_at, id, kind);
CREATE INDEX jobs_due_kind ON jobs (status, kind, run_at, id);
