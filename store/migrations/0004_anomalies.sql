-- Anomaly flags and the anomaly detector's state snapshots.
--
-- A flag is an *episode*: one row per (series, kind, started_at), opened when a condition is
-- first seen, updated while it lasts and resolved when it clears, so one broken sensor gives
-- one row that grows, not a row per reading. The detector makes the id from the key, so a
-- replayed batch or a restart upserts the same row (stream/detect/flags.py, store/anomalies.py).

CREATE TABLE anomalies (
    anomaly_id     text NOT NULL,             -- <sensor>/<metric>/<kind>/<started_at epoch µs>
    started_at     timestamptz NOT NULL,      -- when the condition began
    series_id      integer,                   -- series.series_id, when known
    sensor_id      text NOT NULL CHECK (sensor_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$'),
    metric         text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_]{0,63}$'),
    kind           text NOT NULL
                   CHECK (kind IN ('range', 'spike', 'level_shift', 'flatline', 'noise', 'silence')),
    severity       text NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    score          double precision NOT NULL CHECK (score >= 0 AND score <= 1),
    state          text NOT NULL CHECK (state IN ('open', 'resolved')),
    ended_at       timestamptz,               -- when the condition cleared (resolved flags)
    resolved_at    timestamptz,               -- event time at which it was judged resolved
    first_ts       timestamptz NOT NULL,      -- the readings concerned: first ... last
    last_ts        timestamptz NOT NULL,
    n_readings     bigint NOT NULL CHECK (n_readings >= 0),
    first_value    double precision,          -- e.g. the stuck value of a flat line
    peak_value     double precision,          -- the reading the score was measured on
    peak_ts        timestamptz,
    baseline       double precision,          -- what was expected there (or the range bound)
    statistic      double precision,          -- robust z, noise ratio, readings, silent seconds
    explanation    text NOT NULL,
    config_version text NOT NULL,             -- the detector settings that raised it
    detected_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (last_ts >= first_ts)
);

-- Flags are few (one per episode), so a chunk holds a month; time-range queries and retention
-- (drop_chunks) work on whole months.
SELECT create_hypertable('anomalies', by_range('started_at', INTERVAL '30 days'));
CREATE UNIQUE INDEX anomalies_key ON anomalies (anomaly_id, started_at);
CREATE INDEX anomalies_sensor ON anomalies (sensor_id, started_at DESC);
CREATE INDEX anomalies_open ON anomalies (sensor_id, metric, kind) WHERE state = 'open';

-- The detector's state, one row per detector (the processor runs one per Kafka partition, so
-- a partition's new owner after a rebalance restores the partition's state). `kafka_offset`
-- is the partition's next offset the state has seen: written in the same transaction as the
-- batch's readings, so state, readings and offsets agree (see ARCHITECTURE.md).
CREATE TABLE detector_snapshots (
    detector     text PRIMARY KEY CHECK (length(detector) BETWEEN 1 AND 300),
    kafka_offset bigint CHECK (kafka_offset >= 0),
    format       integer NOT NULL,
    bytes        integer NOT NULL,
    state        bytea NOT NULL,
    taken_at     timestamptz NOT NULL DEFAULT now()
);
