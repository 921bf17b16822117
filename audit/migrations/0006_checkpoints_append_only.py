"""PostgreSQL only: checkpoints are never updated or deleted, not even by retention.

Each checkpoint is the signed end of the chain at its position. Deleting the newest one together
with the events after it would otherwise leave a shorter chain that still verifies, and the sealer
would hand out the same positions again. SQLite (``make run``) has no trigger.
"""

from django.db import migrations

APPEND_ONLY = """
CREATE FUNCTION audit_checkpoint_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit checkpoints are append-only: % of checkpoint % refused', TG_OP, OLD.chain_seq;
END $$;
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION audit_checkpoint_append_only();
"""


def forwards(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPEND_ONLY, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0005_human_username_index")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False)]
