# mailhelper-migrator: database migrations (`mailhelper db upgrade` in the migration unit,
# `mailhelper migrate-sqlite --target-password-from-vault` through the admin wrapper).
# Reads the PostgreSQL migrator password, which lives on a path of its own so that no other
# identity (app, worker, rotator) can read it. Nothing else: no broker, no Flask key, no
# Transit (migrations never see a data key).

path "kv/data/mailhelper/postgresql-migrator" {
  capabilities = ["read"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}
