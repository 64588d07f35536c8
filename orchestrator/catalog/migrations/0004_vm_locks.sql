-- One operation per VM at a time: a backup, an in-place restore or a disks
-- restore into a VM holds that VM's row here from the transaction that
-- creates its job until the job ends. The primary key is the whole lock: a
-- second INSERT for the same VM waits for the first transaction, then finds
-- the row and is refused.
CREATE TABLE vm_locks (
    vm_id        text PRIMARY KEY,
    job_id       uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    kind         text NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vm_locks_job ON vm_locks (job_id);

-- Released by the database itself whenever a job reaches a terminal state,
-- whichever path ends it (rollup, cancel of a queued job, give-up, an
-- operator's UPDATE): no code path can forget it.
CREATE FUNCTION ovault_release_vm_locks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM vm_locks WHERE job_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_release_vm_locks
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('succeeded', 'failed', 'canceled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION ovault_release_vm_locks();
