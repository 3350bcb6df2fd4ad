-- Secrets found in a request body by the outbound data-loss check: a JSON
-- array of scanner rule ids, or NULL when none were found. Never the values.
ALTER TABLE audit ADD COLUMN findings TEXT;
