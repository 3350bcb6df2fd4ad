-- Canary token ids, which the detection monitor reads at startup. Without
-- this index the query walked the primary key and read every token row to
-- test `canary`: about 140 ms and 2 MiB of page cache kept for 100,000
-- tokens. Only canary tokens enter the index, so it stays small and costs
-- other tokens' inserts nothing.
CREATE INDEX tokens_canary ON tokens (id) WHERE canary != 0;
