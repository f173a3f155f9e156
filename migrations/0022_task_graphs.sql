-- Task graphs (issue 16): a task may depend on others (`depends_on` in its
-- TaskSubmitted) and waits until they succeeded.
--
-- The `tasks` read model shows each task's parents and what a parent's
-- failure does to it. '[]' and 'cancel' for every task without parents,
-- among them all written before these columns (the `tasks` projector stays
-- version 4: no event before them has parents).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS depends_on jsonb NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS on_parent_failure text NOT NULL DEFAULT 'cancel';

