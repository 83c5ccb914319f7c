# mailhelper-worker: Celery workers (IMAP sync).
# Reads the database and broker secrets; may unwrap stored data keys (decrypt) to
# encrypt synced mail, but may not create new data keys (that is the app's job).

path "kv/data/mailhelper/postgresql" {
  capabilities = ["read"]
}

path "kv/data/mailhelper/redis" {
  capabilities = ["read"]
}

path "transit/decrypt/mailhelper" {
  capabilities = ["update"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}
