-- The rebuilt chat turn (one read and one commit before the first token):
--  * prompt ids are handed out ahead (nextval in blocks), so the user message can
--    name its prompt while both are written at the same time;
--  * a turn no longer writes STREAMING on the way: PENDING means "running". Whether
--    a running turn is alive is told by its owner's lease, not by its age, so a
--    sweep never races a turn that is still saving;
--  * the answer is saved in the conversation while the prompt is finished; until
--    the conversation has it, answer_pending is true and response_text holds it;
--  * the outbox row is leased to the replica that wrote it, which delivers it at
--    once; other replicas take it only when that lease lapses.

ALTER TABLE ai_prompts
  ADD COLUMN owner          text,
  ADD COLUMN request_hash   text NOT NULL DEFAULT '',
  ADD COLUMN context_tokens bigint NOT NULL DEFAULT 0,
  ADD COLUMN answer_pending boolean NOT NULL DEFAULT false;

-- Running turns and answers not yet in the conversation: what a sweep looks at.
CREATE INDEX ai_prompts_unsettled_idx ON ai_prompts (owner)
  WHERE status IN ('PENDING', 'STREAMING') OR answer_pending;

-- One row per running ai-agent replica; a replica renews its lease every few
-- seconds and deletes the row when it stops.
CREATE TABLE ai_agent_leases (
  owner       text PRIMARY KEY,
  lease_until timestamptz NOT NULL,
  started_at  timestamptz NOT NULL DEFAULT now()
);
