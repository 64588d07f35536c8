-- Automatic protection: policies, their durable schedule ticks, protected
-- backups, deletion in two steps, and the tags that tie jobs to policies.

CREATE TABLE policies (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name             text NOT NULL UNIQUE,
    schedule         text NOT NULL,                 -- 5-field cron
    timezone         text NOT NULL,                 -- IANA name the cron is read in
    retention        jsonb NOT NULL DEFAULT '{}',   -- {"keep_last": n, ...}
    -- explicit members; members by rule are computed against the engine at
    -- every run, never stored
    vm_ids           text[] NOT NULL DEFAULT '{}',
    rules            jsonb NOT NULL DEFAULT '{}',   -- tags, cluster_ids, name_regex, exclude_name_regex
    window_minutes   integer NOT NULL DEFAULT 60 CHECK (window_minutes > 0),
    full_every_days  integer CHECK (full_every_days > 0),
    target_id        uuid REFERENCES targets (id) ON DELETE SET NULL,
    enabled          boolean NOT NULL DEFAULT true,
    notify           jsonb NOT NULL DEFAULT '{}',   -- {"emails": [...], "on": [...]}
    created_by       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- the scheduler's cursor: every fire time up to here has a tick row (or
    -- was folded into a catch-up tick). Moves forward only.
    scheduled_through timestamptz NOT NULL DEFAULT now()
);

-- One row per fire time of a policy. The UNIQUE constraint is what makes a
-- tick fire exactly once across replicas: the replica whose
-- INSERT ... ON CONFLICT DO NOTHING returns the row runs it, the others see
-- nothing come back.
CREATE TABLE policy_ticks (
    id          bigserial PRIMARY KEY,
    policy_id   uuid NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    fire_at     timestamptz NOT NULL,
    -- fired: on time; late: a catch-up run after downtime (missed ticks fold
    -- into one); missed: could not start within window_minutes; skipped: no
    -- VM could run (every member busy, or no member at all)
    status      text NOT NULL CHECK (status IN ('fired', 'late', 'missed', 'skipped')),
    reason      text,
    job_id      uuid REFERENCES jobs (id) ON DELETE SET NULL,
    replica     text,                              -- who fired it
    details     jsonb NOT NULL DEFAULT '{}',       -- {"skipped": {vm_id: reason}, "folded": n}
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT policy_ticks_once UNIQUE (policy_id, fire_at)
);
CREATE INDEX policy_ticks_recent ON policy_ticks (policy_id, fire_at DESC);

-- Daily maintenance (gc, the notification summary): the same exactly-once
-- rule as policy ticks, keyed by task name.
CREATE TABLE maintenance_ticks (
    task        text NOT NULL,
    fire_at     timestamptz NOT NULL,
    replica     text,
    result      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (task, fire_at)
);

-- The last protection status published per VM, so that a change is announced
-- (webhook vm.protection_changed) once, by one replica.
CREATE TABLE vm_protection (
    vm_id       text PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('protected', 'at_risk', 'unprotected', 'excluded')),
    policy_id   uuid,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- Jobs that drive no VM machine: `prune` (delete backups, by retention or on
-- request, crash-safe: re-running one finishes what a dead replica began) and
-- `gc` (the target's garbage collection). Their outcome is in `result`.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('backup', 'restore', 'prune', 'gc'));
ALTER TABLE jobs ADD COLUMN result jsonb;

-- Jobs started by a policy carry it (NULL for manual jobs).
ALTER TABLE jobs ADD COLUMN policy_id uuid REFERENCES policies (id) ON DELETE SET NULL;
CREATE INDEX jobs_policy ON jobs (policy_id, created_at DESC) WHERE policy_id IS NOT NULL;

-- A protected backup is never pruned and cannot be deleted until unmarked.
ALTER TABLE backups ADD COLUMN protected boolean NOT NULL DEFAULT false;
-- Deletion is two-step and crash-safe: 'deleting' (hidden from lists, the
-- manifest may or may not still be on the target) then 'deleted' once the
-- manifest is gone. A restarted worker finishes every 'deleting' backup.
ALTER TABLE backups ADD COLUMN delete_requested_at timestamptz;
ALTER TABLE backups DROP CONSTRAINT backups_status_check;
ALTER TABLE backups ADD CONSTRAINT backups_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'deleting', 'deleted'));
CREATE INDEX backups_deleting ON backups (delete_requested_at) WHERE status = 'deleting';
