-- Canary token ids, which the detection monitor reads at startup
-- (`Store::canary_token_ids`). Without this index that query reads every
-- row of `tokens`. Only canary tokens enter the index, so other tokens add
-- no entry to it.
CREATE INDEX tokens_canary ON tokens (id) WHERE canary != 0;
