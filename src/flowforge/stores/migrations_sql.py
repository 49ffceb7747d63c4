"""What ``flowforge migrate`` and migrations/env.py run besides the migrations."""

from __future__ import annotations

# Two hosts running `flowforge migrate` at once take turns: the second waits, then finds
# nothing left to do. Transaction level: released at commit.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtext('flowforge-migrate'))"

# Run by `flowforge migrate` as the owner: nobody else may write alembic_version (the
# deploy's default privileges give the runtime role writes on every table the owner makes).
REVOKE_VERSION_TABLE_WRITES = """
DO $$
DECLARE grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT grantee FROM information_schema.role_table_grants
        WHERE table_schema = current_schema() AND table_name = 'alembic_version'
          AND privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
          AND grantee <> current_user
    LOOP
        EXECUTE format(
            'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM %s',
            CASE WHEN grantee_name = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(grantee_name) END
        );
    END LOOP;
END $$
"""
