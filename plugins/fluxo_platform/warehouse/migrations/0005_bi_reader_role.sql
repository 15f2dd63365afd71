-- BI tools (Power BI, Tableau, Looker) read the mart views through a read-only group role.
-- It cannot log in itself: grant it to each tool's login role (CREATE ROLE … LOGIN IN ROLE fluxo_bi_reader).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fluxo_bi_reader') THEN
        CREATE ROLE fluxo_bi_reader NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA mart TO fluxo_bi_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA mart TO fluxo_bi_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA mart GRANT SELECT ON TABLES TO fluxo_bi_reader;
