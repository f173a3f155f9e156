-- Tasks name input files (uploaded blobs, mounted read-only at /in/), and a
-- failed task keeps its attempt's logs as artifacts: its `results` row has
-- status 'failed', an empty result document and the logs. Only a row with
-- status 'succeeded' is a result (`GET /v1/tasks/{id}/result`); every row's
-- artifacts are listed by `GET /v1/tasks/{id}/artifacts`. Written by the
-- `tasks` projector from version 3 (which rebuilds the tables on upgrade, so
-- earlier failed tasks get their rows too).
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS inputs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE results ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'succeeded';
ALTER TABLE results ALTER COLUMN exit_code DROP NOT NULL;
