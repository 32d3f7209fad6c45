-- Several deployments per model and ordered fallback models (agent.proto ModelConfig).
-- A model with no deployments is served by its own base_url, api_key_env and
-- provider_model, exactly as before: existing rows need no change.
ALTER TABLE ai_model_configs
  ADD COLUMN deployments jsonb NOT NULL DEFAULT '[]'::jsonb,
  ADD COLUMN fallbacks jsonb NOT NULL DEFAULT '[]'::jsonb;
-- Who answered a turn: the model (a fallback's name when one answered, its price
-- snapshot replacing the first) and the deployment.
ALTER TABLE ai_prompts ADD COLUMN deployment text NOT NULL DEFAULT '';
