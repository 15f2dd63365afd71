-- The query API's own state: OAuth2 clients, failed-authentication lockouts, and a request id
-- column on the access audit (api/app/core/clients.py, api/app/core/audit.py).
CREATE SCHEMA IF NOT EXISTS auth;

-- OAuth2 clients (client-credentials grant). Secrets are stored as argon2id hashes only.
-- A rotation keeps the previous hash valid until previous_valid_until, so a dashboard can
-- switch to the new secret without an outage.
CREATE TABLE auth.clients (
    client_id            text PRIMARY KEY CHECK (client_id ~ '^[A-Za-z0-9._:@-]{1,128}$'),
    secret_hash          text NOT NULL,
    previous_secret_hash text,
    previous_valid_until timestamptz,
    scopes               text[] NOT NULL DEFAULT '{}',
    description          text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    disabled_at          timestamptz
);

-- Failed client authentications per (client id, address): a window counter and a lockout.
-- Shared by every API worker and replica through the warehouse.
CREATE TABLE auth.failed_logins (
    key             text PRIMARY KEY,
    failures        integer NOT NULL,
    window_started  timestamptz NOT NULL,
    locked_until    timestamptz
);

-- The request id of each audited request, indexed, so one request is found without parsing detail.
ALTER TABLE audit.api_access ADD COLUMN request_id text;
CREATE INDEX api_access_request_id ON audit.api_access (request_id);

-- A group role with exactly what the API needs; grant it to the API's login role
-- (CREATE ROLE fluxo_api_login LOGIN PASSWORD '…' IN ROLE fluxo_api).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fluxo_api') THEN
        CREATE ROLE fluxo_api NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA metrics, quality, audit, auth TO fluxo_api;
GRANT SELECT ON ALL TABLES IN SCHEMA metrics TO fluxo_api;
ALTER DEFAULT PRIVILEGES IN SCHEMA metrics GRANT SELECT ON TABLES TO fluxo_api;
GRANT SELECT ON ALL TABLES IN SCHEMA quality TO fluxo_api;
GRANT SELECT ON audit.pipeline_runs TO fluxo_api;
GRANT INSERT ON audit.api_access TO fluxo_api;
GRANT USAGE ON SEQUENCE audit.api_access_id_seq TO fluxo_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA auth TO fluxo_api;
