-- A backup whose data on the target was found damaged (by verify): a chunk it
-- references does not hash to its name, is missing, or an index is bad.
-- `damage` keeps what verify found: [{digest, reason, ranges: [{disk_id,
-- offset, length}]}] and {bad_indexes: {disk_id: reason}}; `verified_at` is
-- the last verify that looked at it. A later verify that finds it intact
-- (the chunk was rewritten by a newer backup) clears the flag. A damaged
-- backup is never the parent of an incremental.
ALTER TABLE backups
    ADD COLUMN damaged     boolean NOT NULL DEFAULT false,
    ADD COLUMN damage      jsonb,
    ADD COLUMN verified_at timestamptz;
CREATE INDEX backups_damaged ON backups (vm_id) WHERE damaged;

-- Verify runs as a job too (POST /api/v1/verify, and the weekly schedule).
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('backup', 'restore', 'prune', 'gc', 'verify'));
