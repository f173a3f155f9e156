-- A task whose attempt runs as a job on an outside executor (a Slurm job)
-- shows that job: the executor, its id for the job, and when it was first
-- seen running (NULL while it waits in the executor's queue, when the
-- task's `status` is shown `queued`). NULL for every task that has no such
-- job, among them all written before this column. Written by the `tasks`
-- projector (still version 4: no event before these columns has a job).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS executor text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS executor_job_id text;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS executor_running_at timestamptz;
