-- One message per (conversation, prompt, role): the ai-agent retries an append
-- whose answer it did not get (the conversation service restarted mid-call), and
-- the retry must find the message the first attempt wrote, not add a second.
CREATE UNIQUE INDEX messages_prompt_role_key ON messages (conversation_id, prompt_id, role)
  WHERE prompt_id IS NOT NULL;
