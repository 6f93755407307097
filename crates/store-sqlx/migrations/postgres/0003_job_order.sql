-- Jobs that must run one at a time in enqueue order (the notifications of one request) share an
-- order_key; order_seq is their enqueue order (wall-clock microseconds × 1000 + the position in
-- the change set).
ALTER TABLE jobs ADD COLUMN order_key TEXT;
ALTER TABLE jobs ADD COLUMN order_seq BIGINT;
CREATE INDEX jobs_order ON jobs (order_key, status, order_seq);
