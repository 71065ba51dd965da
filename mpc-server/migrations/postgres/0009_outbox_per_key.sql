-- Webhook delivery in order per key (mpc-server/src/webhook.rs): an event
-- is sent only when no earlier event of its key is undelivered, so the
-- deliverer looks up "the oldest undelivered event of this key" for every
-- candidate and for every claim. This partial index answers that with one
-- probe and stays as small as the backlog.

CREATE INDEX outbox_key_pending ON outbox (key_id, id) WHERE delivered_at IS NULL;
