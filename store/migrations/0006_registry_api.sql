-- Indexes for the registry API (additive to 0002).
--
-- Listing a device's credentials (GET /v1/{sensors,gateways}/{id}/credentials, newest first):
-- device_credentials_active covers only the active row of each device.
CREATE INDEX device_credentials_username ON device_credentials (username, credential_id DESC);
