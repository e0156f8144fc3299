-- chatd's database, schema version 1: the binary users and their mail.
-- (Line users are bound to their connection and are not kept.)

CREATE TABLE version (
    version INTEGER NOT NULL
);

-- One row a registered binary user; id is the order of arrival.
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    host TEXT NOT NULL     -- the peer host that registered it, and may claim it back
);

-- One row a queued message; id is the order of arrival.
CREATE TABLE mail (
    id INTEGER PRIMARY KEY,
    receiver INTEGER NOT NULL REFERENCES users (id),
    sender TEXT NOT NULL,
    text TEXT NOT NULL
);
