-- Every task belongs to one tenant (`TaskSubmitted`'s `tenant`); only that
-- tenant's keys and platform keys see it. Tasks submitted before tenants
-- existed are the `default` tenant's: the column's default fills the rows
-- already here, and the `tasks` projector (from version 4) rebuilds the
-- table from the log, where such tasks read the same. Migration 13 with
-- 0013_device_tenants.sql (one file per projector's tables).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE tasks ALTER COLUMN tenant DROP DEFAULT;
CREATE INDEX IF NOT EXISTS tasks_by_tenant ON tasks (tenant, submitted_at DESC, task_id DESC);
