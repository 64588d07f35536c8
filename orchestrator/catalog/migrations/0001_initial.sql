-- ovault catalog, initial schema.
-- State names are API: they mirror orchestrator.catalog.models and the state
-- machines in statemachines/. Identifiers we mint are uuid; identifiers the
-- engine mints (VMs, disks, snapshots, transfers, checkpoints) are text.

-- RFC 7386 JSON merge patch: objects merge recursively, a null in the patch
-- removes the key. Used to record machine resources from concurrent disk tasks
-- without losing one another's keys.
CREATE FUNCTION ovault_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
    v jsonb;
    result jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        result := '{}'::jsonb;
    ELSE
        result := target;
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            result := result - k;
        ELSE
            result := jsonb_set(result, ARRAY[k], ovault_merge_patch(result -> k, v));
        END IF;
    END LOOP;
    RETURN result;
END
$$;

CREATE TABLE targets (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    url         text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind              text NOT NULL CHECK (kind IN ('backup', 'restore')),
    state             text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
    request           jsonb NOT NULL DEFAULT '{}',
    created_by        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    error             text,
    lease_owner       text,
    lease_expires_at  timestamptz,
    -- how many times a replica has claimed it: a job that keeps killing its
    -- owner shows up here.
    attempts          integer NOT NULL DEFAULT 0,
    cancel_requested  boolean NOT NULL DEFAULT false,
    CONSTRAINT jobs_lease_pair CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT jobs_finished_when_terminal
        CHECK ((finished_at IS NOT NULL) = (state IN ('succeeded', 'failed', 'canceled')))
);
-- claim(): oldest claimable first; only live jobs are in the index.
CREATE INDEX jobs_live ON jobs (created_at, id) WHERE state IN ('queued', 'running');
-- list(): newest first, keyset pagination.
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);

CREATE TABLE backups (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vm_id            text NOT NULL,
    vm_name          text,
    job_id           uuid REFERENCES jobs (id) ON DELETE SET NULL,
    target_id        uuid REFERENCES targets (id) ON DELETE RESTRICT,
    mode             text NOT NULL CHECK (mode IN ('full', 'incremental')),
    method           text NOT NULL CHECK (method IN ('cbt', 'snapshot')),
    parent_id        uuid REFERENCES backups (id) ON DELETE SET NULL,
    checkpoint_id    text,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'succeeded', 'failed', 'deleted')),
    consistency      text CHECK (consistency IN ('crash', 'application')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    size_bytes       bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),   -- logical (sum of virtual disk sizes read)
    new_bytes        bigint NOT NULL DEFAULT 0 CHECK (new_bytes >= 0),    -- bytes newly written to the store
    fallback_reason  text,                                                -- why CBT fell back to full / snapshot
    error            text,
    -- VM configuration (OVF and the fields a restore needs)
    config           jsonb NOT NULL DEFAULT '{}'
    -- parent_id may be NULL for an incremental: every index is a synthetic full,
    -- so deleting a parent never breaks a child (ON DELETE SET NULL).
);
CREATE INDEX backups_vm ON backups (vm_id, created_at DESC, id DESC);
CREATE INDEX backups_created ON backups (created_at DESC, id DESC);
CREATE INDEX backups_job ON backups (job_id);
CREATE INDEX backups_parent ON backups (parent_id);

CREATE TABLE backup_disks (
    backup_id         uuid NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
    disk_id           text NOT NULL,
    alias             text,
    provisioned_size  bigint NOT NULL CHECK (provisioned_size >= 0),
    format            text NOT NULL CHECK (format IN ('raw', 'cow')),
    bytes_read        bigint NOT NULL DEFAULT 0 CHECK (bytes_read >= 0),
    bytes_written     bigint NOT NULL DEFAULT 0 CHECK (bytes_written >= 0),
    index_digest      text,                      -- sha256 of the disk's .fidx digests
    info              jsonb NOT NULL DEFAULT '{}', -- attachment: interface, bootable, ...
    PRIMARY KEY (backup_id, disk_id)
);

CREATE TABLE machines (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id       uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('backup', 'restore')),
    vm_id        text NOT NULL,
    vm_name      text,
    state        text NOT NULL DEFAULT 'queued',
    -- What this machine created in the engine (snapshot id, engine backup id,
    -- transfer ids, created disk/vm ids), written before and after each engine
    -- call so that a replica resuming it can compensate instead of duplicating.
    resources    jsonb NOT NULL DEFAULT '{}',
    context      jsonb NOT NULL DEFAULT '{}',
    -- per-disk progress {disk_id: {"bytes_done", "bytes_total", ...}}
    disks        jsonb NOT NULL DEFAULT '{}',
    backup_id    uuid REFERENCES backups (id) ON DELETE SET NULL,
    error        text,
    bytes_total  bigint NOT NULL DEFAULT 0 CHECK (bytes_total >= 0),
    bytes_done   bigint NOT NULL DEFAULT 0 CHECK (bytes_done >= 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    version      integer NOT NULL DEFAULT 0,      -- bumped by every state change (CAS)
    CONSTRAINT machines_state_of_kind CHECK (
        (kind = 'backup' AND state IN ('queued', 'snapshot', 'metadata', 'transfer',
                                       'finalize', 'cleanup', 'succeeded', 'failed', 'canceled'))
        OR
        (kind = 'restore' AND state IN ('queued', 'prepare', 'transfer', 'finalize',
                                        'cleanup', 'succeeded', 'failed', 'canceled'))),
    CONSTRAINT machines_one_per_vm UNIQUE (job_id, vm_id)
);
CREATE INDEX machines_vm ON machines (vm_id);
CREATE INDEX machines_backup ON machines (backup_id);

-- Outbox of everything that happened; webhooks and the websocket read it.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    type        text NOT NULL,
    job_id      uuid,                 -- no FK: the log outlives deleted jobs
    payload     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_job ON events (job_id, id) WHERE job_id IS NOT NULL;

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url         text NOT NULL,
    secret      text NOT NULL,        -- HMAC key: must stay readable, never logged
    events      text[] NOT NULL,      -- 'job.failed', 'job.*' or '*'
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempt          integer NOT NULL DEFAULT 0,          -- attempts started
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),  -- sha256 of the token
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked       boolean NOT NULL DEFAULT false
);
