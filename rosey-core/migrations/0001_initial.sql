-- Rosey's storage, first version: the three tables. One set of migrations serves SQLite and
-- PostgreSQL, so only types both understand are used: BIGINT, DOUBLE PRECISION, TEXT.
-- Times are microseconds since the Unix epoch (UTC), in BIGINT columns ending in `_us`.
-- Never edit a migration that has shipped: sqlx checks each applied migration's checksum at start.
-- Change the schema with a new file (`0003_<what>.sql`, …) instead.

-- Every `!admin` command (and dashboard action), one row per command, whatever its outcome.
CREATE TABLE audit_log (
    time_us BIGINT NOT NULL,           -- when it happened
    node TEXT NOT NULL,                -- the `node.name` of the rosey process that handled it
    actor TEXT NOT NULL,               -- who asked: the chat user name, or `dashboard`
    actor_rank DOUBLE PRECISION,       -- the actor's rank on the chat server, when known
    command TEXT NOT NULL,             -- the command, e.g. `reload`
    arguments TEXT NOT NULL,           -- its arguments as typed, e.g. `dice-roller`
    outcome TEXT NOT NULL,             -- `ok`, `denied`, `failed`, `cancelled`, `rate_limited`, …
    detail TEXT                        -- a sentence for people: the reload report, why it was refused
);

-- What happened to each plugin: the lifecycle history the dashboard and `!admin status` show.
CREATE TABLE plugin_events (
    time_us BIGINT NOT NULL,           -- when it happened
    node TEXT NOT NULL,                -- the node running the plugin
    plugin TEXT NOT NULL,              -- the plugin's name
    kind TEXT NOT NULL,                -- started | crashed | restarted | failed | stopped | reload_ok | reload_failed
    version TEXT,                      -- the version concerned (for a reload, the new one)
    reason TEXT,                       -- why: the crash cause, the reload failure
    duration_seconds DOUBLE PRECISION  -- how long it took (reloads), in seconds
);

-- The plugins' key-value store (`rosey.db.kv.*`). A plugin reaches only the rows carrying its own
-- name, which the host stamps on every request.
CREATE TABLE kv (
    plugin TEXT NOT NULL,              -- the owning plugin's name
    key TEXT NOT NULL,                 -- at most 256 bytes (checked by the host)
    value TEXT NOT NULL,               -- the value as JSON text, at most 64 KiB (checked by the host)
    updated_at_us BIGINT NOT NULL,     -- when it was last set
    PRIMARY KEY (plugin, key)
);
