-- A fresh database knows the current OpenAI models and their list prices
-- (micros of a USD per million tokens). base_url '' means the configured default
-- provider (OPENAI_BASE_URL). Existing rows are left alone, so an operator's
-- edits survive.
INSERT INTO ai_model_configs (name, provider_model, base_url, api_key_env,
    input_price_micros_per_mtok, cached_input_price_micros_per_mtok,
    output_price_micros_per_mtok, context_window, max_output_tokens,
    default_temperature, enabled, is_default, use_max_tokens_param)
VALUES
  ('gpt-4o-mini',  'gpt-4o-mini',  '', 'OPENAI_API_KEY',  150000,   75000,   600000,  128000,  16384, 1.0, true, true,  false),
  ('gpt-4o',       'gpt-4o',       '', 'OPENAI_API_KEY', 2500000, 1250000, 10000000,  128000,  16384, 1.0, true, false, false),
  ('gpt-4.1',      'gpt-4.1',      '', 'OPENAI_API_KEY', 2000000,  500000,  8000000, 1047576,  32768, 1.0, true, false, false),
  ('gpt-4.1-mini', 'gpt-4.1-mini', '', 'OPENAI_API_KEY',  400000,  100000,  1600000, 1047576,  32768, 1.0, true, false, false),
  ('gpt-4.1-nano', 'gpt-4.1-nano', '', 'OPENAI_API_KEY',  100000,   25000,   400000, 1047576,  32768, 1.0, true, false, false),
  ('o4-mini',      'o4-mini',      '', 'OPENAI_API_KEY', 1100000,  275000,  4400000,  200000, 100000, 1.0, true, false, false)
ON CONFLICT DO NOTHING;
