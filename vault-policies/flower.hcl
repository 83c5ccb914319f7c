# mailhelper-flower: the Flower monitoring UI.
# Reads its own basic-auth credentials and the broker password; nothing else.

path "kv/data/mailhelper/flower" {
  capabilities = ["read"]
}

path "kv/data/mailhelper/redis" {
  capabilities = ["read"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}
