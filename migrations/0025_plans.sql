-- Plans (issue 16): task graphs submitted in one request, written only by
-- the `plans` projector (projections/src/plans): one row per plan, one per
-- task of a plan with its name and its status as the task's events leave
-- it, so a plan's tasks and counts by status are read from here.

CREATE TABLE plans (
    plan_id      uuid        PRIMARY KEY,
    tenant       text        NOT NULL,
    task_count   integer     NOT NULL,
    submitted_at timestamptz NOT NULL,
    position     bigint      NOT NULL -- the PlanSubmitted event
);

CREATE INDEX plans_by_tenant ON plans (tenant, position DESC);
CREATE INDEX plans_by_position ON plans (position DESC);

CREATE TABLE plan_tasks (
    plan_id  uuid    NOT NULL,
    ordinal  integer NOT NULL, -- the plan's order: parents first
    name     text    NOT NULL,
    task_id  uuid    NOT NULL,
    status   text    NOT NULL,
    PRIMARY KEY (plan_id, ordinal)
);

CREATE INDEX plan_tasks_by_task ON plan_tasks (task_id);
