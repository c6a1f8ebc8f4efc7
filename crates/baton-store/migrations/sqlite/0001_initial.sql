-- baton run store, SQLite: runs and their journals.

-- One row per run. A rowid table: the input can be large, which WITHOUT ROWID tables handle badly.
CREATE TABLE runs (
    id            BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16), -- RunId, UUID bytes
    workflow      TEXT    NOT NULL,
    status        TEXT    NOT NULL,                                     -- RunStatus, snake case
    parent        BLOB             CHECK (parent IS NULL OR length(parent) = 16),
    input         TEXT    NOT NULL,                                     -- JSON
    source        TEXT,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
);

CREATE INDEX runs_by_status ON runs (status, created_at_us);

-- The event log: one row per appended batch, holding events first_seq..=last_seq.
-- body: a format version byte, then the encoded events (see baton_store::codec).
CREATE TABLE journal (
    run_id    BLOB    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL CHECK (last_seq >= first_seq),
    body      BLOB    NOT NULL,
    PRIMARY KEY (run_id, first_seq)
) WITHOUT ROWID;
