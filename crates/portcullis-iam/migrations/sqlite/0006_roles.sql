-- Roles (RBAC): a role grants scopes and is held by the users listed on the
-- user, by members of its groups and by its clients. A scope that some role
-- grants is only issued to holders of such a role.
CREATE TABLE roles (
    name           TEXT PRIMARY KEY NOT NULL,
    description    TEXT NOT NULL,
    scopes         TEXT NOT NULL,
    member_groups  TEXT NOT NULL,
    member_clients TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
