-- Finished jobs are deleted once they are older than the retention period (`[server]
-- job_retention_days`, docs/operations.md). The purge finds them by kind, state and age, so
-- jobs_kind gains updated_at and the purge reads a range of it per kind instead of the table.
-- No write costs more: every statement that sets updated_at sets status too (a claim, a
-- completion, a retry, a burial), and jobs_kind already held status.
DROP INDEX jobs_kind;
CREATE INDEX jobs_kind ON jobs (kind, status, updated_at);
