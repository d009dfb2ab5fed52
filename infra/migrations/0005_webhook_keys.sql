-- Webhook deliveries are told apart per signing key, not per trigger: the signature does not
-- cover the URL, so a delivery captured on its way to one trigger verifies at every trigger
-- that uses the same key. The API now stores each delivery with the key that signed it
-- (`signing_key`: "<namespace>/<key name>", never its value) and
-- delivery_id = 'key:' || sha256 of (namespace, key name, signed delivery id or signature),
-- and this index lets one such row of a given id exist across every workflow and trigger.
-- Rows of the older per-trigger form have no signing_key: they stay outside the index, so
-- whatever ids they hold cannot make this migration fail.
ALTER TABLE webhook_deliveries ADD COLUMN signing_key text;

CREATE UNIQUE INDEX webhook_deliveries_by_key ON webhook_deliveries (delivery_id)
    WHERE signing_key IS NOT NULL;
