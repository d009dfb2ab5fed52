-- Webhook deliveries: one run per (workflow, trigger, delivery id), however often the
-- sender repeats a delivery.
CREATE TABLE webhook_deliveries (
    workflow_id text NOT NULL,
    trigger_id  text NOT NULL,
    delivery_id text NOT NULL,
    run_id      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, trigger_id, delivery_id)
);
