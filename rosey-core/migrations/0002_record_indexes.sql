-- Indexes for the record queries, which read newest first (ORDER BY time_us DESC), optionally for
-- one actor or one plugin, and for retention, which deletes by time (time_us < cutoff).
-- The kv table needs none beyond its primary key (plugin, key), which serves get, set, delete,
-- count and list by prefix.

CREATE INDEX audit_log_time ON audit_log (time_us);
CREATE INDEX audit_log_actor_time ON audit_log (actor, time_us);

CREATE INDEX plugin_events_time ON plugin_events (time_us);
CREATE INDEX plugin_events_plugin_time ON plugin_events (plugin, time_us);
