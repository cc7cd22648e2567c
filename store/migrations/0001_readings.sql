-- Raw readings: one narrow row per (series, instant).
--
-- A series is one metric of one sensor. Readings reference it by a 4-byte integer instead of
-- repeating two strings per row: rows are 24 bytes of payload, COPY and the unique index are
-- much cheaper, and the (series_id, ts) key is what makes writes idempotent.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE series (
    series_id  integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id  text NOT NULL CHECK (sensor_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    metric     text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_]{0,63}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sensor_id, metric)
);

-- No foreign key to series: a per-row FK check would cost on every COPY. The processor only
-- writes series ids it obtained from this table (store/readings.py), which is the invariant.
CREATE TABLE readings (
    series_id integer          NOT NULL,
    ts        timestamptz      NOT NULL,
    value     double precision NOT NULL
);

-- Chunk interval 1 day: at 10,000 sensors x 5 metrics x 1/min (72 M rows/day, ~4 GB with the
-- index) the newest chunk and its index stay in memory on a 24 GB machine (TimescaleDB's
-- rule of thumb: the active chunks' indexes within ~25% of RAM), and time-range queries
-- exclude whole days. Larger deployments shorten it with set_chunk_time_interval().
-- No default ts index: the unique (series_id, ts) index serves every per-series query and
-- each extra index would slow ingest.
SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'), create_default_indexes => false);

-- The reading's identity. A replayed Kafka batch or a re-delivered MQTT message conflicts
-- here and adds no row (first write wins).
CREATE UNIQUE INDEX readings_series_ts ON readings (series_id, ts);
