-- Every delivery attempt of a webhook, listable through the API
-- (GET /api/v1/webhooks/{id}/deliveries/{delivery_id}/attempts).
CREATE TABLE webhook_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempt       integer NOT NULL CHECK (attempt >= 1),
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    status_code   integer,
    error         text,
    outcome       text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'gave_up')),
    UNIQUE (delivery_id, attempt)
);
