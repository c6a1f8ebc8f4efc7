-- The kill switch: requests to halt one run (run_id) or every active run (run_id NULL).
CREATE TABLE halts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id BLOB,
    at_us INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX halts_by_time ON halts (at_us);
