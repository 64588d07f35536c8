-- How consistent a backup's point in time is, as the engine reported it:
-- 'filesystem' when the engine froze the guest's file systems through the
-- guest agent before the point in time was taken, 'crash' otherwise (the VM
-- was down, or running without an agent that answered). Backups recorded
-- before this column existed are 'crash'.
ALTER TABLE backups
    ADD COLUMN consistency text NOT NULL DEFAULT 'crash'
        CHECK (consistency IN ('crash', 'filesystem'));
