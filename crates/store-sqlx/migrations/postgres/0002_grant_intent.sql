-- What a grant's provider call is about to add, recorded before the call (issue 11): a retried
-- grant adopts its own earlier work, and a take-back without a handle knows what to remove.
ALTER TABLE grants ADD COLUMN provider_intent TEXT NOT NULL DEFAULT 'null';
-- 1 while the provider may still hold work of a grant that is no longer live (provisioning
-- finished after the grant was revoked or expired): the revoke job takes it back, then clears it.
ALTER TABLE grants ADD COLUMN takeback_pending BIGINT NOT NULL DEFAULT 0;
