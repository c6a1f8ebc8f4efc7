-- baton run store, PostgreSQL: runs and their journals.

-- One row per run.
CREATE TABLE runs (
    id            uuid   NOT NULL PRIMARY KEY,
    workflow      text   NOT NULL,
    status        text   NOT NULL,                                       -- RunStatus, snake case
    parent        uuid,
    input         json   NOT NULL,                                       -- kept as written
    source        text,
    created_at_us bigint NOT NULL,
    updated_at_us bigint NOT NULL
);

CREATE INDEX runs_by_status ON runs (status, created_at_us);

-- The event log: one row per appended batch, holding events first_seq..=last_seq.
-- body: a format version byte, then the encoded events (see baton_store::codec).
CREATE TABLE journal (
    run_id    uuid   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_seq bigint NOT NULL,
    last_seq  bigint NOT NULL CHECK (last_seq >= first_seq),
    body      bytea  NOT NULL,
    PRIMARY KEY (run_id, first_seq)
);
