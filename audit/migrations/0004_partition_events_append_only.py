"""PostgreSQL only: the events table becomes partitioned by month on ``occurred``, and append-only.

The conversion copies the existing rows into a new partitioned table (one statement per month,
in this migration's transaction): fine for the young tables this project creates; a table that
already holds tens of millions of rows should be converted in a maintenance window.

The database's primary key becomes (id, occurred), as PostgreSQL requires the partition key in
every unique constraint; Django keeps ``id`` as the model's pk, and ids stay unique because they
all come from one sequence. SQLite (``make run``) keeps a plain table without the trigger.
"""

from django.db import migrations

CONVERT = """
DO $$
DECLARE
    index_defs text[];
    index_def text;
    first_month date;
    month date;
    last_id bigint;
BEGIN
    ALTER TABLE audit_auditevent RENAME TO audit_auditevent_unpartitioned;
    SELECT array_agg(indexdef) INTO index_defs FROM pg_indexes
        WHERE tablename = 'audit_auditevent_unpartitioned' AND indexname NOT LIKE '%_pkey';

    CREATE TABLE audit_auditevent (LIKE audit_auditevent_unpartitioned INCLUDING DEFAULTS)
        PARTITION BY RANGE (occurred);
    CREATE SEQUENCE audit_auditevent_id_seq_p OWNED BY audit_auditevent.id;
    ALTER TABLE audit_auditevent ALTER COLUMN id SET DEFAULT nextval('audit_auditevent_id_seq_p');
    -- Rows with an occurred no monthly partition covers land here: an insert never fails.
    CREATE TABLE audit_auditevent_default PARTITION OF audit_auditevent DEFAULT;

    first_month := date_trunc('month', coalesce(
        (SELECT min(occurred) FROM audit_auditevent_unpartitioned), now()) AT TIME ZONE 'UTC')::date;
    month := first_month;
    WHILE month <= (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months')::date LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF audit_auditevent FOR VALUES FROM (%L) TO (%L)',
            'audit_auditevent_' || to_char(month, 'YYYY_MM'),
            month::timestamp AT TIME ZONE 'UTC', (month + interval '1 month')::timestamp AT TIME ZONE 'UTC');
        month := (month + interval '1 month')::date;
    END LOOP;

    INSERT INTO audit_auditevent SELECT * FROM audit_auditevent_unpartitioned;
    SELECT max(id) INTO last_id FROM audit_auditevent_unpartitioned;
    IF last_id IS NOT NULL THEN
        PERFORM setval('audit_auditevent_id_seq_p', last_id);
    END IF;
    DROP TABLE audit_auditevent_unpartitioned;
    ALTER TABLE audit_auditevent ADD PRIMARY KEY (id, occurred);

    -- Django's indexes again, same names, now on every partition.
    IF index_defs IS NOT NULL THEN
        FOREACH index_def IN ARRAY index_defs LOOP
            EXECUTE replace(index_def, ' ON public.audit_auditevent_unpartitioned ', ' ON public.audit_auditevent ');
        END LOOP;
    END IF;
END $$;
"""

# Writers only INSERT. The sealer may set chain_seq and chain_hash once on an unsealed row and
# change nothing else; retention may DELETE inside a transaction that says so. TRUNCATE is not
# blocked here (the test runner flushes with it): in production the application's role must not
# own the table, so it can neither TRUNCATE nor disable this trigger (docs/AUDIT.md).
APPEND_ONLY = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('audit.retention', true) = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit events are append-only: DELETE of event % refused outside retention', OLD.id;
    END IF;
    IF OLD.chain_seq IS NULL AND OLD.chain_hash IS NULL
       AND NEW.chain_seq IS NOT NULL AND NEW.chain_hash IS NOT NULL
       AND (to_jsonb(NEW) - 'chain_seq' - 'chain_hash') = (to_jsonb(OLD) - 'chain_seq' - 'chain_hash') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: UPDATE of event % refused', OLD.id;
END $$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""


def forwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CONVERT, params=None)
    schema_editor.execute(APPEND_ONLY, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_chain_position_search_indexes")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False)]
