-- The sensor registry: tenants (municipalities), kinds of device (sensor types and their
-- metrics), sensors, field gateways, and the credentials of people (API keys) and devices
-- (MQTT username/password). Secrets are stored only as hashes.
--
-- Every registry write bumps registry_state.version and sends NOTIFY meetnet_registry, so
-- caches (ingest gateway, stream processor, broker auth sync, API key cache) refresh within
-- seconds: LISTEN for speed, the version for polling where LISTEN is not possible.

-- Ids that may appear in MQTT topics and usernames: no wildcard, path or space characters.
-- The same pattern as meetnet.wire.SENSOR_ID_PATTERN.
CREATE DOMAIN meetnet_slug AS text CHECK (VALUE ~ '^[a-z0-9][a-z0-9_-]{0,63}$');

CREATE TABLE municipalities (
    -- Official NIS code (Statbel / REFNIS), five digits: 44021 Gent, 11002 Antwerpen.
    nis_code     text PRIMARY KEY CHECK (nis_code ~ '^[1-9][0-9]{4}$'),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    centroid_lat double precision CHECK (centroid_lat BETWEEN -90 AND 90),
    centroid_lon double precision CHECK (centroid_lon BETWEEN -180 AND 180),
    -- GeoJSON Polygon or MultiPolygon geometry in WGS84 (lon, lat), optional.
    boundary     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((centroid_lat IS NULL) = (centroid_lon IS NULL))
);

CREATE TABLE sensor_types (
    type_id     meetnet_slug PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    -- Anomaly-detection thresholds for this kind of device (stream processor); {} = defaults.
    detection   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detection) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What a sensor of a type measures: one row per metric.
CREATE TABLE sensor_type_metrics (
    type_id     meetnet_slug NOT NULL REFERENCES sensor_types ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric ~ '^[a-z][a-z0-9_]{0,63}$'),
    unit        text NOT NULL CHECK (length(unit) BETWEEN 1 AND 32),  -- UCUM-style: ug/m3, cm, dB(A)
    min_value   double precision NOT NULL,  -- physical range of the quantity / the device
    max_value   double precision NOT NULL,
    interval_s  integer NOT NULL CHECK (interval_s BETWEEN 1 AND 604800),  -- expected reporting interval
    description text NOT NULL DEFAULT '',
    PRIMARY KEY (type_id, metric),
    CHECK (min_value < max_value)
);

CREATE TABLE gateways (
    gateway_id   meetnet_slug PRIMARY KEY,
    municipality text NOT NULL REFERENCES municipalities,
    name         text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, municipality)  -- target of the sensors' same-municipality foreign key
);

CREATE TABLE sensors (
    sensor_id    meetnet_slug PRIMARY KEY,
    municipality text NOT NULL REFERENCES municipalities,
    type_id      meetnet_slug NOT NULL REFERENCES sensor_types,
    -- The gateway that may publish for this sensor (optional); always of the same municipality.
    gateway_id   meetnet_slug,
    name         text NOT NULL DEFAULT '',
    lat          double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon          double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    height_m     double precision CHECK (height_m BETWEEN -500 AND 10000),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'maintenance', 'retired')),
    visibility   text NOT NULL DEFAULT 'public' CHECK (visibility IN ('public', 'private')),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (gateway_id, municipality) REFERENCES gateways (gateway_id, municipality)
);
CREATE INDEX sensors_municipality ON sensors (municipality, sensor_id);
CREATE INDEX sensors_type ON sensors (type_id);
CREATE INDEX sensors_gateway ON sensors (gateway_id) WHERE gateway_id IS NOT NULL;
CREATE INDEX sensors_lat_lon ON sensors (lat, lon);

-- Sensor and gateway ids are one namespace: both are MQTT usernames.
CREATE FUNCTION meetnet_device_id_unique() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Serialise creations of either kind, so two concurrent inserts cannot both pass.
    PERFORM pg_advisory_xact_lock(hashtext('meetnet_device_ids'));
    IF TG_TABLE_NAME = 'sensors' THEN
        IF EXISTS (SELECT 1 FROM gateways WHERE gateway_id = NEW.sensor_id) THEN
            RAISE EXCEPTION 'id % is already a gateway id', NEW.sensor_id
                USING ERRCODE = 'unique_violation', CONSTRAINT = 'device_id_unique';
        END IF;
    ELSIF EXISTS (SELECT 1 FROM sensors WHERE sensor_id = NEW.gateway_id) THEN
        RAISE EXCEPTION 'id % is already a sensor id', NEW.gateway_id
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'device_id_unique';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER sensors_device_id BEFORE INSERT ON sensors
    FOR EACH ROW EXECUTE FUNCTION meetnet_device_id_unique();
CREATE TRIGGER gateways_device_id BEFORE INSERT ON gateways
    FOR EACH ROW EXECUTE FUNCTION meetnet_device_id_unique();

-- MQTT credentials of a sensor (publishes on <prefix>/sensors/<id>) or a gateway (publishes on
-- <prefix>/gateways/<id> for its sensors). The username is the device id; the password is
-- stored as a Mosquitto password-file hash (PBKDF2-SHA512, "$7$..."), never in clear.
-- At most one active credential per device; rotating revokes the old one in the same
-- transaction.
CREATE TABLE device_credentials (
    credential_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_id     meetnet_slug REFERENCES sensors,
    gateway_id    meetnet_slug REFERENCES gateways,
    username      meetnet_slug NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK (num_nonnulls(sensor_id, gateway_id) = 1),
    CHECK (username = coalesce(sensor_id, gateway_id))
);
CREATE UNIQUE INDEX device_credentials_active ON device_credentials (username)
    WHERE revoked_at IS NULL;

-- API keys: "Authorization: Bearer mnk_<key_id>_<secret>". The secret is 32 random bytes, so a
-- plain SHA-256 of it is stored (a slow password hash buys nothing for random keys).
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[a-z0-9]{8,32}$'),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    role         text NOT NULL CHECK (role IN ('admin', 'municipality', 'reader')),
    municipality text REFERENCES municipalities,
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK ((role = 'municipality') = (municipality IS NOT NULL))
);

-- Change tracking for caches.
CREATE TABLE registry_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    bigint NOT NULL DEFAULT 0,
    changed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO registry_state DEFAULT VALUES;

CREATE FUNCTION meetnet_registry_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_state SET version = version + 1, changed_at = now();
    PERFORM pg_notify('meetnet_registry', TG_TABLE_NAME);
    RETURN NULL;
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['municipalities', 'sensor_types', 'sensor_type_metrics',
                             'gateways', 'sensors', 'device_credentials', 'api_keys'] LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION meetnet_registry_changed()',
                       t || '_changed', t);
    END LOOP;
END $$;

-- updated_at maintained by the database, so no client path can forget it.
CREATE FUNCTION meetnet_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['municipalities', 'sensor_types', 'gateways', 'sensors'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION meetnet_touch_updated_at()',
                       t || '_touch', t);
    END LOOP;
END $$;
