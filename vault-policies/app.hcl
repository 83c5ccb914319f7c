# mailhelper-app: the web application (gunicorn/Flask).
# Reads its connection secrets and does envelope encryption with the Transit key:
# creates per-user data keys (derived key, context = user) and unwraps stored ones.

path "kv/data/mailhelper/postgresql" {
  capabilities = ["read"]
}

path "kv/data/mailhelper/redis" {
  capabilities = ["read"]
}

path "kv/data/mailhelper/flask" {
  capabilities = ["read"]
}

path "transit/datakey/plaintext/mailhelper" {
  capabilities = ["update"]
}

path "transit/decrypt/mailhelper" {
  capabilities = ["update"]
}

# Key material never leaves Vault, whatever other policy a token may carry.
path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}
