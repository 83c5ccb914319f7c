# mailhelper-rotator: key rotation (`mailhelper rotate-keys`).
# Rotates the Transit key and rewraps stored data keys to the newest key version.
# It must never see a plaintext data key: no decrypt, no datakey.

path "kv/data/mailhelper/postgresql" {
  capabilities = ["read"]
}

# Key metadata only (versions, min_decryption_version); the key is not exportable.
path "transit/keys/mailhelper" {
  capabilities = ["read"]
}

path "transit/keys/mailhelper/rotate" {
  capabilities = ["update"]
}

path "transit/rewrap/mailhelper" {
  capabilities = ["update"]
}

path "transit/decrypt/*" {
  capabilities = ["deny"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}
