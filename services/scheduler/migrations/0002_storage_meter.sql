-- Storage metering (the billing issue): how far the scheduler has metered the stored
-- artifacts. One row; every window [metered_until, next boundary) is metered once its end
-- has passed, then metered_until moves on (compare-and-set, so several scheduler copies
-- never skip or repeat a window; a window produced twice has the same event ids).
CREATE TABLE sched.storage_meter (
    id            integer PRIMARY KEY CHECK (id = 1),
    metered_until timestamptz NOT NULL
);
