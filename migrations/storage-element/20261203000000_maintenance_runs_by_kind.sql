-- The last run of a kind (the console's last consistency report) without reading every run.
CREATE INDEX maintenance_runs_kind_finished
    ON maintenance_runs (kind, finished_at DESC NULLS LAST);
