-- The model response cache: replies keyed on a digest of the exact request.
CREATE TABLE response_cache (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
