-- Scale (issue 13): the lists (admin API, `/access status`) read `ORDER BY created_at DESC, id DESC
-- LIMIT n` and page on the key (created_at, id). Indexes ending in (created_at, id) serve both in
-- index order: 50 active grants out of 100,000 are 50 index entries, not a sort of all of them.
-- Each replaces an index that was its prefix (no query needs the shorter one).
DROP INDEX requests_status;
CREATE INDEX requests_status ON requests (status, created_at, id);
DROP INDEX requests_subject;
CREATE INDEX requests_subject ON requests (team_id, user_id, created_at, id);
DROP INDEX requests_resource;
CREATE INDEX requests_resource ON requests (resource, created_at, id);
DROP INDEX requests_created;
CREATE INDEX requests_created ON requests (created_at, id);
-- grants_status (status, expires_at) stays for expiry-ordered reads; this one is the list's.
CREATE INDEX grants_status_created ON grants (status, created_at, id);
DROP INDEX grants_subject;
CREATE INDEX grants_subject ON grants (team_id, user_id, created_at, id);
DROP INDEX grants_resource;
CREATE INDEX grants_resource ON grants (resource, created_at, id);
DROP INDEX grants_created;
CREATE INDEX grants_created ON grants (created_at, id);
