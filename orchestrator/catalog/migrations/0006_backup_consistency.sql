-- How consistent a backup's point in time is, as the engine reported it:
-- 'filesystem' when the engine froze the guest's file systems through the
-- guest agent before the point in time was taken, 'crash' otherwise (the VM
-- was down, or ran without an agent that answered). The column came with the
-- first schema allowing 'application', which was never written; succeeded
-- backups recorded before this migration are 'crash'. A running or failed
-- backup has none yet (NULL).
ALTER TABLE backups DROP CONSTRAINT IF EXISTS backups_consistency_check;
UPDATE backups SET consistency = 'crash'
 WHERE consistency IS DISTINCT FROM 'crash' AND status IN ('succeeded', 'deleted');
ALTER TABLE backups ADD CONSTRAINT backups_consistency_check
    CHECK (consistency IN ('crash', 'filesystem'));
