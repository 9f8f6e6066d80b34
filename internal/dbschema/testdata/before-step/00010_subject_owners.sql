-- +goose Up
-- Subjects have owners: a reference records whose it is (the owner attribute of
-- its events: ingest's caller, or the source of a producer that publishes on
-- its own behalf), and the current reference is kept per owner and subject,
-- never by subject alone, so one owner's upload cannot move another's.

-- References ingest accepted belong to its caller. Those of other producers
-- never recorded their source: they get the empty owner, which no caller or
-- producer can have (the owner attribute is never empty), so nobody reads or
-- moves them. A row written without an owner (by hand) is unowned the same way.
ALTER TABLE upload_refs ADD COLUMN owner text NOT NULL DEFAULT '';
UPDATE upload_refs r SET owner = u.caller FROM ingest_uploads u WHERE u.id = r.id;
DROP INDEX upload_refs_subject_idx;
CREATE INDEX upload_refs_owner_subject_idx ON upload_refs (owner, subject, event_time DESC);

-- The recorded result of the ref step is the completed event's reference: it
-- carries the owner too, so that a re-emitted completed event says whose it is.
UPDATE step_markers m SET result = jsonb_set(m.result, '{owner}', to_jsonb(r.owner))
FROM upload_refs r
WHERE m.step = 'ref' AND m.upload_id = r.id AND r.owner <> '' AND jsonb_typeof(m.result) = 'object';

-- Each owner's current reference of a subject is its newest reference (event
-- time, then upload id), as refwriter would have moved it. A reference dated
-- more than five minutes after the migration (the default MAX_CLOCK_SKEW,
-- which consumers now enforce) is not current: it would pin its subject until
-- that date.
ALTER TABLE subject_refs ADD COLUMN owner text NOT NULL DEFAULT '';
DELETE FROM subject_refs;
ALTER TABLE subject_refs DROP CONSTRAINT subject_refs_pkey;
ALTER TABLE subject_refs ADD PRIMARY KEY (owner, subject);
INSERT INTO subject_refs (owner, subject, upload_id, event_time)
SELECT DISTINCT ON (owner, subject) owner, subject, id, event_time
FROM upload_refs
WHERE event_time <= now() + interval '5 minutes'
ORDER BY owner, subject, event_time DESC, id DESC;

-- +goose Down
DELETE FROM subject_refs;
ALTER TABLE subject_refs DROP CONSTRAINT subject_refs_pkey;
ALTER TABLE subject_refs DROP COLUMN owner;
ALTER TABLE subject_refs ADD PRIMARY KEY (subject);
INSERT INTO subject_refs (subject, upload_id, event_time)
SELECT DISTINCT ON (subject) subject, id, event_time
FROM upload_refs
ORDER BY subject, event_time DESC, id DESC;
UPDATE step_markers SET result = result - 'owner' WHERE step = 'ref' AND jsonb_typeof(result) = 'object';
DROP INDEX upload_refs_owner_subject_idx;
CREATE INDEX upload_refs_subject_idx ON upload_refs (subject, event_time DESC);
ALTER TABLE upload_refs DROP COLUMN owner;
