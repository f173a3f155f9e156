-- A device's tenant is its newest `DeviceAssigned` event, read on every
-- request a tenant key makes to a device (`PgEventStore::latest_of_type`).
-- A device's stream grows with every message it sends, so without this the
-- read would pass every event of a never-assigned device; with it, the read
-- is one lookup in an index that holds only assignments.
CREATE INDEX IF NOT EXISTS events_stream_version_assigned
    ON events (stream_id, version)
    WHERE event_type = 'DeviceAssigned';
