-- Console: history filtered by person (Slack user id or e-mail) reads an index, not the table.
CREATE INDEX requests_user ON requests (user_id, created_at);
CREATE INDEX requests_email ON requests (email, created_at);
