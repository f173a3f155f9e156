-- A task waiting for a retry's backoff shows when its next attempt is due
-- (`TaskRetried`'s `next_attempt_at`; NULL when it is not waiting, and for
-- retries recorded before backoffs existed, which were due at once).
-- Written by the `tasks` projector (still version 4: rows already here
-- need no rebuild, since no event before this column has a due time).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;
