-- A kind's `max_running` is held across runners by their attempt leases:
-- each lease names its task's kind, and a runner takes one (under a
-- transaction-scoped advisory lock per kind) only while fewer than the
-- limit of that kind are fresh (src/workers/runner/limit.rs). Leases taken
-- before this migration name no kind and count toward no limit.
ALTER TABLE attempt_leases ADD COLUMN IF NOT EXISTS kind text;
CREATE INDEX IF NOT EXISTS attempt_leases_by_kind ON attempt_leases (kind, renewed_at);
