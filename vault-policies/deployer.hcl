# mailhelper-deployer: the Ansible runs after the bootstrap (the root token is revoked).
# Keeps mounts, the Transit key, policies and AppRoles as declared, creates missing stack
# secrets, reads them for wiring into the other roles, and issues AppRole credentials.
# It cannot use Transit for data (no datakey/decrypt/encrypt), export or back up keys,
# touch audit devices, seal, or manage tokens beyond its own.

# Secrets engines: list, and enable the two the bundle uses.
path "sys/mounts" {
  capabilities = ["read"]
}

path "sys/mounts/kv" {
  capabilities = ["create", "read", "update"]
}

path "sys/mounts/transit" {
  capabilities = ["create", "read", "update"]
}

# Auth methods: list, and enable AppRole (enabling an auth method needs sudo).
path "sys/auth" {
  capabilities = ["read"]
}

path "sys/auth/approle" {
  capabilities = ["create", "read", "update", "sudo"]
}

# The bundle's ACL policies, and nothing else (no delete: removing a policy is a manual act).
path "sys/policies/acl" {
  capabilities = ["list"]
}

path "sys/policies/acl/mailhelper-*" {
  capabilities = ["create", "read", "update"]
}

# The Transit key: create it and read its settings. No access to keys/mailhelper/config:
# it could make the key exportable, which can never be undone.
path "transit/keys/mailhelper" {
  capabilities = ["create", "read", "update"]
}

# The bundle's AppRoles: define them, read role_ids, issue secret_ids (mailhelper-app,
# -worker, -flower, -rotator, -migrator and its own).
path "auth/approle/role" {
  capabilities = ["list"]
}

path "auth/approle/role/mailhelper-*" {
  capabilities = ["create", "read", "update", "list"]
}

# Stack secrets: create when absent (check-and-set), read for wiring, see metadata; update
# writes a new version without a retired field (migrator_password of mailhelper/postgresql,
# which moved to mailhelper/postgresql-migrator).
path "kv/data/mailhelper/*" {
  capabilities = ["create", "read", "update"]
}

path "kv/metadata/mailhelper/*" {
  capabilities = ["read", "list"]
}

path "transit/export/*" {
  capabilities = ["deny"]
}

path "transit/backup/*" {
  capabilities = ["deny"]
}

path "transit/datakey/*" {
  capabilities = ["deny"]
}

path "transit/decrypt/*" {
  capabilities = ["deny"]
}
