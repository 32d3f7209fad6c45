-- Which turns are unsettled (running, or an answer not yet in the conversation) moves
-- out of ai_prompts into a small table of its own. The partial index it replaces
-- named status and answer_pending, so finishing a turn and settling its answer were
-- updates of indexed columns: every index of ai_prompts got a new entry, twice per
-- turn. Now no index of ai_prompts covers a column a turn's updates change, and with
-- room left on each page (fillfactor) those updates are HOT: no index work at all.
-- The side table holds only the turns in flight; a row is inserted with the prompt
-- and deleted in the statement that settles it.
CREATE TABLE ai_prompts_unsettled (
  prompt_id bigint PRIMARY KEY,
  owner     text,  -- the replica whose lease keeps the turn alive (NULL: from before leases)
  since     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ai_prompts_unsettled (prompt_id, owner, since)
  SELECT id, owner, created_at FROM ai_prompts
  WHERE status IN ('PENDING', 'STREAMING') OR answer_pending;
DROP INDEX ai_prompts_unsettled_idx;
ALTER TABLE ai_prompts SET (fillfactor = 80);
ALTER TABLE ai_prompts_unsettled SET (fillfactor = 70);
