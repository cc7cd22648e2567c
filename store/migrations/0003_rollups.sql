-- Rollups: per-series time-window aggregates kept by the stream processor, the latest value of
-- every series, and the queue of buckets to recompute from the raw readings.
--
-- Every rollup row holds a *mergeable* state of the readings of one series in one bucket, so
-- that two states combine exactly (count, sum, min, max, first, last) or stably (mean and m2,
-- Chan et al.'s parallel variance update):
--     n = na + nb,  d = mean_b - mean_a
--     mean = mean_a + d * nb / n
--     m2   = m2_a + m2_b + d^2 * na * nb / n
-- and variance = m2 / n (population) or m2 / (n - 1) (sample). The identity of the merge is
-- (count 0, sum 0, mean 0, m2 0, min +inf, max -inf, first_ts +infinity, last_ts -infinity);
-- a repair writes it as a placeholder to lock a bucket before recomputing it, and never
-- commits it. The processor merges each batch's deltas into these rows in the same
-- transaction as the raw insert; the query API merges rows of a finer level into coarser or
-- arbitrary intervals with the same rules.
-- See ARCHITECTURE.md, "Rollups".

DO $$
DECLARE
    lvl record;
BEGIN
    FOR lvl IN SELECT * FROM (VALUES
        -- table              chunk interval (sized so a chunk is a few GB at 50,000 series)
        ('rollups_1m',        INTERVAL '1 day'),
        ('rollups_15m',       INTERVAL '7 days'),
        ('rollups_1h',        INTERVAL '30 days'),
        ('rollups_1d',        INTERVAL '365 days'),
        ('rollups_1d_local',  INTERVAL '365 days')
    ) AS t(name, chunk) LOOP
        EXECUTE format($f$
            CREATE TABLE %I (
                series_id   integer          NOT NULL,
                bucket      timestamptz      NOT NULL,  -- start of the bucket (UTC instant)
                -- 0 only inside a repair transaction (the merge identity, see below)
                count       bigint           NOT NULL CHECK (count >= 0),
                sum         double precision NOT NULL,
                mean        double precision NOT NULL,
                m2          double precision NOT NULL,  -- sum of squared deviations from mean
                min         double precision NOT NULL,
                max         double precision NOT NULL,
                first_ts    timestamptz      NOT NULL,
                first_value double precision NOT NULL,
                last_ts     timestamptz      NOT NULL,
                last_value  double precision NOT NULL
            ) WITH (fillfactor = 80)$f$, lvl.name);
        -- fillfactor 80: every batch updates its buckets in place; the free space lets
        -- PostgreSQL make those HOT updates (no index change, no new index entry).
        PERFORM create_hypertable(lvl.name::regclass, by_range('bucket', lvl.chunk),
                                  create_default_indexes => false);
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (series_id, bucket)',
                       lvl.name || '_series_bucket', lvl.name);
    END LOOP;
END $$;

-- The newest reading of every series, only ever moving forward in ts: a late reading never
-- replaces a newer one. One row per series, so "latest value of every sensor" is a scan of
-- this small table, never of the hypertable.
CREATE TABLE latest (
    series_id integer          PRIMARY KEY,
    ts        timestamptz      NOT NULL,
    value     double precision NOT NULL
) WITH (fillfactor = 80);

-- Buckets to recompute from the raw readings: readings older than the late horizon
-- (MEETNET_ROLLUP_LATE_HORIZON_S) are stored with a mark per (level, series, bucket) instead
-- of a merged delta, in the same transaction; `meetnet rollups rebuild` marks whole ranges.
-- Marks are append-only (one id each): a repair claims and deletes the marks it read, so a
-- mark written while a repair runs survives it and triggers another one.
CREATE TABLE rollup_dirty (
    id        bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    level     smallint NOT NULL CHECK (level BETWEEN 0 AND 4),  -- index into stream.rollups.LEVELS
    series_id integer  NOT NULL,
    bucket    timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT now()
);
