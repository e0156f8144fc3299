-- From schema version 1 to 2: index the mail by receiver. Without it, every
-- receive and logout, and the foreign key check of every deleted user, read
-- the whole mail table.
CREATE INDEX mail_by_receiver ON mail (receiver, id);
