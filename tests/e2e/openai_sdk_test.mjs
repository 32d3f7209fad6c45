// The official `openai` npm SDK against aichat's OpenAI-compatible HTTP API (run by
// openai_sdk_test.sh, which starts the suite and passes the addresses and keys). Answers are
// checked against the fake provider's deterministic rules and the requests it received, and
// every usage figure against the usage ledger (usage_logs) to the token and the nano.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { pathToFileURL } from 'node:url';

const env = process.env;
// The SDK as npm installed it for this test (openai_sdk_test.sh: OPENAI_SDK_DIR).
const OpenAI = (await import(pathToFileURL(`${env.OPENAI_SDK_DIR}/node_modules/openai/index.mjs`))).default;
const BASE = env.AICHAT_BASE_URL;
const MODEL = 'gpt-4o-mini';
const client = (apiKey, opts = {}) => new OpenAI({ apiKey, baseURL: BASE, maxRetries: 0, ...opts });
const alice = client(env.ALICE_KEY);
const bob = client(env.BOB_KEY);

let step = '';
const t0 = Date.now();
function begin(name) {
  step = name;
  console.log(`  -- [${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}`);
}
process.on('unhandledRejection', (e) => {
  console.error(`FAIL (${step}):`, e);
  process.exit(1);
});

// ---- the suite's ground truth

function psql(db, sql) {
  return execFileSync('psql', ['-h', '127.0.0.1', '-p', env.PG_PORT, '-U', 'postgres', '-d', db,
    '-tAq', '-F', '|', '-c', sql], { encoding: 'utf8' }).trim();
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The ledger's record of a prompt, once the outbox has delivered it.
async function ledger(promptId) {
  for (let i = 0; i < 200; i++) {
    const row = psql('aichat_usage', `SELECT prompt_tokens, completion_tokens, cached_tokens,
      cost_nanos, estimated FROM usage_logs WHERE prompt_id = ${promptId}`);
    if (row) {
      const [p, c, cached, cost, est] = row.split('|');
      return { prompt_tokens: +p, completion_tokens: +c, cached_tokens: +cached, cost_nanos: +cost,
        estimated: est === 't' };
    }
    await sleep(50);
  }
  throw new Error(`prompt ${promptId} never reached the ledger`);
}
const ledgerRows = (promptId) =>
  +psql('aichat_usage', `SELECT count(*) FROM usage_logs WHERE prompt_id = ${promptId}`);
const promptCount = () => +psql('aichat_agent', 'SELECT count(*) FROM ai_prompts');
const lastPromptId = () => +psql('aichat_agent', 'SELECT coalesce(max(id), 0) FROM ai_prompts');

const fakeCa = readFileSync(env.FAKE_CA);
function fakeRequests() {
  return new Promise((resolve, reject) => {
    https.get(`${env.FAKE_URL}/_fake/requests`, { ca: fakeCa }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(JSON.parse(body).requests
        .filter((r) => r.path.endsWith('/chat/completions'))
        .map((r) => JSON.parse(r.body))));
    }).on('error', reject);
  });
}
// What the provider was sent for the (unique) text `marker`.
async function upstream(marker) {
  return (await fakeRequests()).filter((b) => JSON.stringify(b.messages).includes(marker));
}

// The fake's answer: n tokens, token i being word[i % W] of the last user message (directives
// removed), joined by spaces.
function fakeAnswer(text, n = 8) {
  const words = text.replace(/\[\[fake:[^\]]*\]\]/g, ' ').split(/\s+/).filter(Boolean);
  if (words.length === 0) words.push('ok');
  return Array.from({ length: n }, (_, i) => words[i % words.length]).join(' ');
}
// The fake's prompt_tokens: 3 + for each message 4 + its whitespace-separated words.
const fakePromptTokens = (messages) =>
  3 + messages.reduce((s, m) => s + 4 + m.content.split(/\s+/).filter(Boolean).length, 0);

function sameUsage(usage, record, what) {
  assert.equal(usage.prompt_tokens ?? usage.input_tokens, record.prompt_tokens, `${what}: prompt tokens`);
  assert.equal(usage.completion_tokens ?? usage.output_tokens, record.completion_tokens, `${what}: completion tokens`);
  const cached = usage.prompt_tokens_details?.cached_tokens ?? usage.input_tokens_details?.cached_tokens;
  assert.equal(cached, record.cached_tokens, `${what}: cached tokens`);
  assert.equal(usage.cost_nanos, record.cost_nanos, `${what}: cost in nanos`);
  assert.equal(usage.total_tokens, record.prompt_tokens + record.completion_tokens, `${what}: total`);
}
const promptOf = (id) => +id.replace(/^(chatcmpl-|resp_)/, '');

async function rejects(promise, Cls, check = () => {}) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof Cls, `expected ${Cls.name}, got ${e?.constructor?.name}: ${e?.message}`);
    check(e);
    return e;
  }
  assert.fail(`expected ${Cls.name}, but the call succeeded`);
}

// ---------------------------------------------------------------- models
begin('models: list and retrieve');
{
  const ids = [];
  for await (const m of alice.models.list()) ids.push(m.id);
  assert.ok(ids.includes(MODEL), ids.join(','));
  const m = await alice.models.retrieve(MODEL);
  assert.equal(m.id, MODEL);
  assert.equal(m.object, 'model');
  await rejects(alice.models.retrieve('no-such-model'), OpenAI.NotFoundError);
  // An access token works as well as an API key.
  const viaToken = await client(env.ALICE_TOKEN).models.retrieve(MODEL);
  assert.equal(viaToken.id, MODEL);
}

// ---------------------------------------------------------------- chat completions
begin('chat completion: the caller\'s messages as given; usage equals the ledger');
{
  const messages = [
    { role: 'system', content: 'You answer in echoes.' },
    { role: 'user', content: 'red green blue one' },
    { role: 'assistant', content: 'noted' },
    { role: 'user', content: 'stateless alpha beta gamma' },
  ];
  const r = await alice.chat.completions.create({ model: MODEL, messages });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-\d+$/);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, fakeAnswer('stateless alpha beta gamma'));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.usage.prompt_tokens, fakePromptTokens(messages));
  const sent = await upstream('stateless alpha beta gamma');
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0].messages.map((m) => [m.role, m.content]), messages.map((m) => [m.role, m.content]));
  sameUsage(r.usage, await ledger(promptOf(r.id)), 'non-streaming');
}

begin('chat completion, streamed: chunks, include_usage, [DONE]');
{
  const text = 'streamed delta epsilon';
  const stream = await alice.chat.completions.create({
    model: MODEL, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: text }],
  });
  let content = '';
  let usage = null;
  let finish = null;
  let id = null;
  let chunks = 0;
  let roleFirst = false;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    id = chunk.id;
    if (chunks++ === 0) roleFirst = chunk.choices[0]?.delta?.role === 'assistant';
    if (chunk.choices.length) {
      content += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(roleFirst, 'the first chunk carries the role');
  assert.ok(chunks >= 10, `${chunks} chunks`);
  assert.equal(content, fakeAnswer(text));
  assert.equal(finish, 'stop');
  assert.ok(usage, 'include_usage sends a usage chunk');
  sameUsage(usage, await ledger(promptOf(id)), 'streaming');
}

begin('chat completion: max_tokens caps the answer (finish_reason length)');
{
  const r = await alice.chat.completions.create({
    model: MODEL, max_tokens: 3, messages: [{ role: 'user', content: 'capped one two three four' }],
  });
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 3);
  sameUsage(r.usage, await ledger(promptOf(r.id)), 'capped');
}

// ---------------------------------------------------------------- bound to a conversation
let aliceConversation;
begin('chat completion bound to a conversation: history from the store, both messages saved');
{
  const conv = await alice.conversations.create({
    metadata: { title: 'bound' },
    items: [{ type: 'message', role: 'system', content: 'Be brief.' }],
  });
  assert.match(conv.id, /^conv_\d+$/);
  assert.equal(conv.object, 'conversation');
  assert.equal(conv.metadata.title, 'bound');
  aliceConversation = conv.id;
  // Only the last user message is taken; the rest of the request is the client's view.
  const r1 = await alice.chat.completions.create({
    model: MODEL, metadata: { conversation_id: conv.id },
    messages: [{ role: 'system', content: 'IGNORED system' }, { role: 'user', content: 'IGNORED old' },
      { role: 'user', content: 'bound first question' }],
  });
  assert.equal(r1.choices[0].message.content, fakeAnswer('bound first question'));
  const sent1 = (await upstream('bound first question'))[0].messages;
  assert.deepEqual(sent1, [{ role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'bound first question' }]);
  // The header binds too (streamed this time).
  const stream = await alice.chat.completions.create(
    { model: MODEL, stream: true, messages: [{ role: 'user', content: 'bound second question' }] },
    { headers: { 'x-aichat-conversation-id': conv.id } });
  let text = '';
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
  assert.equal(text, fakeAnswer('bound second question'));
  const sent2 = (await upstream('bound second question'))[0].messages;
  assert.deepEqual(sent2, [{ role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'bound first question' },
    { role: 'assistant', content: fakeAnswer('bound first question') },
    { role: 'user', content: 'bound second question' }]);
  const items = [];
  for await (const item of alice.conversations.items.list(conv.id, { order: 'asc' })) items.push(item);
  assert.deepEqual(items.map((i) => [i.role, i.content[0].text]), [
    ['user', 'bound first question'], ['assistant', fakeAnswer('bound first question')],
    ['user', 'bound second question'], ['assistant', fakeAnswer('bound second question')]]);
  assert.equal(items[1].content[0].type, 'output_text');
  sameUsage(r1.usage, await ledger(promptOf(r1.id)), 'bound');
  // The conversation id is in the ledger too.
  const convId = conv.id.slice(5);
  assert.equal(psql('aichat_usage', `SELECT conversation_id FROM usage_logs WHERE prompt_id = ${promptOf(r1.id)}`), convId);
}

// ---------------------------------------------------------------- conversations + responses
let aliceResponse;
begin('responses: a new conversation, previous_response_id, conversation, streamed, retrieved');
{
  const r1 = await alice.responses.create({ model: MODEL, input: 'tell me about cats',
    instructions: 'Talk like a pirate.' });
  assert.equal(r1.object, 'response');
  assert.equal(r1.status, 'completed');
  assert.match(r1.id, /^resp_\d+$/);
  assert.equal(r1.output_text, fakeAnswer('tell me about cats'));
  assert.match(r1.conversation.id, /^conv_\d+$/);
  sameUsage(r1.usage, await ledger(promptOf(r1.id)), 'response 1');

  const r2 = await alice.responses.create({ model: MODEL, input: 'and then dogs',
    previous_response_id: r1.id });
  assert.equal(r2.output_text, fakeAnswer('and then dogs'));
  assert.equal(r2.conversation.id, r1.conversation.id);
  assert.equal(r2.previous_response_id, r1.id);
  assert.deepEqual((await upstream('and then dogs'))[0].messages, [
    { role: 'system', content: 'Talk like a pirate.' }, { role: 'user', content: 'tell me about cats' },
    { role: 'assistant', content: fakeAnswer('tell me about cats') },
    { role: 'user', content: 'and then dogs' }]);

  const stream = await alice.responses.create({ model: MODEL, input: 'finally some birds',
    conversation: r1.conversation.id, stream: true });
  const types = [];
  let deltas = '';
  let completed = null;
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
    if (ev.type === 'response.completed') completed = ev.response;
  }
  assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress',
    'response.output_item.added', 'response.content_part.added']);
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(deltas, fakeAnswer('finally some birds'));
  assert.equal(completed.output[0].content[0].text, deltas);
  sameUsage(completed.usage, await ledger(promptOf(completed.id)), 'streamed response');

  const again = await alice.responses.retrieve(completed.id);
  assert.equal(again.status, 'completed');
  assert.equal(again.output_text, deltas);
  assert.equal(again.usage.cost_nanos, completed.usage.cost_nanos);

  // Continuing from an older response would branch the conversation: refused, by name.
  await rejects(alice.responses.create({ model: MODEL, input: 'branch', previous_response_id: r1.id }),
    OpenAI.BadRequestError, (e) => assert.equal(e.param, 'previous_response_id'));

  // The items, newest first (OpenAI's default), two per page through the SDK's paginator.
  const items = [];
  for await (const item of alice.conversations.items.list(r1.conversation.id, { limit: 2 })) items.push(item);
  assert.deepEqual(items.map((i) => i.role),
    ['assistant', 'user', 'assistant', 'user', 'assistant', 'user']);
  assert.equal(items[0].content[0].text, deltas);
  assert.equal(items[5].content[0].text, 'tell me about cats');

  // store: false is a stateless turn: no conversation, not continuable.
  const r4 = await alice.responses.create({ model: MODEL, input: 'not kept anywhere', store: false });
  assert.equal(r4.conversation, undefined);
  assert.equal(r4.output_text, fakeAnswer('not kept anywhere'));
  await rejects(alice.responses.create({ model: MODEL, input: 'x', previous_response_id: r4.id }),
    OpenAI.BadRequestError, (e) => assert.equal(e.param, 'previous_response_id'));
  aliceResponse = r1.id;

  const got = await alice.conversations.retrieve(r1.conversation.id);
  assert.equal(got.id, r1.conversation.id);
  assert.equal(got.metadata.title, 'tell me about cats');
  const deleted = await alice.conversations.delete(r1.conversation.id);
  assert.deepEqual([deleted.id, deleted.deleted], [r1.conversation.id, true]);
  await rejects(alice.conversations.retrieve(r1.conversation.id), OpenAI.NotFoundError);
}

// ---------------------------------------------------------------- ownership
begin('another user\'s conversations and responses: 404 on every route, nothing changed');
{
  const before = [];
  for await (const i of alice.conversations.items.list(aliceConversation)) before.push(i.id);
  const nf = (p) => rejects(p, OpenAI.NotFoundError);
  await nf(bob.conversations.retrieve(aliceConversation));
  await nf(bob.conversations.items.list(aliceConversation));
  await nf(bob.conversations.delete(aliceConversation));
  await nf(bob.chat.completions.create({ model: MODEL, metadata: { conversation_id: aliceConversation },
    messages: [{ role: 'user', content: 'idor by metadata' }] }));
  await nf(bob.chat.completions.create({ model: MODEL, stream: true,
    messages: [{ role: 'user', content: 'idor by header' }] },
  { headers: { 'x-aichat-conversation-id': aliceConversation } }));
  await nf(bob.responses.create({ model: MODEL, input: 'idor conv', conversation: aliceConversation }));
  await nf(bob.responses.create({ model: MODEL, input: 'idor prev', previous_response_id: aliceResponse }));
  await nf(bob.responses.retrieve(aliceResponse));
  const after = [];
  for await (const i of alice.conversations.items.list(aliceConversation)) after.push(i.id);
  assert.deepEqual(after, before);
  assert.equal((await upstream('idor ')).length, 0, 'nothing reached the provider');
}

// ---------------------------------------------------------------- error classes
begin('AuthenticationError: a wrong key, a forged token');
{
  await rejects(client('aik_not-a-real-key').models.list(), OpenAI.AuthenticationError,
    (e) => assert.equal(e.status, 401));
  await rejects(client('eyJhbGciOiJub25lIn0.e30.').chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: 'x' }] }), OpenAI.AuthenticationError);
}

begin('BadRequestError naming the parameter; unsupported parameters are refused, not dropped');
{
  const bad = async (extra, param, messages = [{ role: 'user', content: 'bad request' }]) => {
    const before = promptCount();
    await rejects(alice.chat.completions.create({ model: MODEL, messages, ...extra }),
      OpenAI.BadRequestError, (e) => assert.equal(e.param, param, e.message));
    assert.equal(promptCount(), before, `${param}: nothing written`);
  };
  await bad({ temperature: 5 }, 'temperature');
  await bad({ n: 2 }, 'n');
  await bad({ tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 'tools');
  await bad({ response_format: { type: 'json_object' } }, 'response_format');
  await bad({ logprobs: true }, 'logprobs');
  await bad({ audio: { voice: 'alloy', format: 'wav' }, modalities: ['text', 'audio'] }, 'audio');
  await bad({ frobnicate: true }, 'frobnicate');
  await bad({}, 'messages[0].content[1].type', [{ role: 'user', content: [
    { type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: 'https://x/y.png' } }] }]);
  await bad({}, 'messages[0].role', [{ role: 'tool', content: 'x', tool_call_id: 'c' }]);
  // Checked by the turn itself: still named as the API names it.
  await rejects(alice.chat.completions.create({ model: MODEL, max_tokens: 100000000,
    messages: [{ role: 'user', content: 'too many' }] }), OpenAI.BadRequestError,
  (e) => assert.equal(e.param, 'max_tokens'));
  await rejects(alice.chat.completions.create({ model: 'no-such-model',
    messages: [{ role: 'user', content: 'x' }] }), OpenAI.NotFoundError,
  (e) => assert.equal(e.code, 'model_not_found'));
  await rejects(alice.responses.create({ model: MODEL, input: 'x', tools: [{ type: 'web_search' }] }),
    OpenAI.BadRequestError, (e) => assert.equal(e.param, 'tools'));
}

begin('RateLimitError: the request rate (Retry-After) and the budget (insufficient_quota)');
{
  const carol = client(env.CAROL_KEY);
  for (let i = 0; i < 2; i++) {
    await carol.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `carol ${i}` }] });
  }
  const e = await rejects(carol.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: 'carol over the limit' }] }), OpenAI.RateLimitError);
  assert.equal(e.status, 429);
  assert.equal(e.code, 'rate_limit_exceeded');
  const after = +e.headers.get('retry-after');
  assert.ok(after >= 1 && after <= 60, `retry-after ${after}`);
  assert.equal((await upstream('carol over the limit')).length, 0);

  // The budget: the SDK would retry a 429, but x-should-retry: false stops it (waiting does
  // not refill a budget): exactly one refused prompt.
  const dave = client(env.DAVE_KEY, { maxRetries: 2 });
  const before = +psql('aichat_agent', "SELECT count(*) FROM ai_prompts WHERE status = 'BUDGET_EXCEEDED'");
  const b = await rejects(dave.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: 'dave has no budget' }] }), OpenAI.RateLimitError);
  assert.equal(b.code, 'insufficient_quota');
  assert.equal(b.headers.get('x-should-retry'), 'false');
  assert.equal(+psql('aichat_agent', "SELECT count(*) FROM ai_prompts WHERE status = 'BUDGET_EXCEEDED'"), before + 1);
}

begin('provider faults: 503 and 502 as APIError; a stream cut mid-answer raises');
{
  const e503 = await rejects(alice.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: '[[fake:status=503]] overloaded provider' }] }),
  OpenAI.InternalServerError);
  assert.equal(e503.status, 503);
  const e502 = await rejects(alice.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: '[[fake:status=500]] broken provider' }] }),
  OpenAI.InternalServerError);
  assert.equal(e502.status, 502);
  assert.ok(e502 instanceof OpenAI.APIError);
  const stream = await alice.chat.completions.create({ model: MODEL, stream: true,
    messages: [{ role: 'user', content: '[[fake:drop_after=2 tokens=20]] cut short' }] });
  let got = '';
  const cut = await rejects((async () => {
    for await (const c of stream) got += c.choices[0]?.delta?.content ?? '';
  })(), OpenAI.APIError);
  assert.ok(got.length > 0, 'deltas arrived before the failure');
  assert.match(cut.message, /provider/);
  const rs = await alice.responses.create({ model: MODEL, stream: true, store: false,
    input: '[[fake:drop_after=2 tokens=20]] response cut short' });
  const types = [];
  for await (const ev of rs) types.push(ev.type);
  assert.deepEqual(types.slice(-2), ['error', 'response.failed']);
}

// ---------------------------------------------------------------- retries never double-charge
begin('the SDK\'s own retries: a lost answer is replayed, not run and charged again');
{
  // The first answer is lost on the way back (the connection "fails" after the server
  // answered); the SDK retries with x-stainless-retry-count: 1 and gets the same turn back.
  let attempts = 0;
  const lossy = client(env.ALICE_KEY, {
    maxRetries: 2,
    fetch: async (url, init) => {
      const res = await fetch(url, init);
      if (String(url).endsWith('/chat/completions') && attempts++ === 0) {
        await res.text();
        throw new TypeError('fetch failed (the answer was lost)');
      }
      return res;
    },
  });
  const before = promptCount();
  const r = await lossy.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: 'lost answer replayed' }] });
  assert.equal(attempts, 2, 'the SDK retried');
  assert.equal(r.choices[0].message.content, fakeAnswer('lost answer replayed'));
  assert.equal(promptCount(), before + 1, 'one turn');
  assert.equal((await upstream('lost answer replayed')).length, 1, 'one provider call');
  await ledger(promptOf(r.id));
  assert.equal(ledgerRows(promptOf(r.id)), 1);

  // An Idempotency-Key from the caller: the same answer, one charge.
  const key = { headers: { 'Idempotency-Key': `e2e-${Date.now()}` } };
  const body = { model: MODEL, messages: [{ role: 'user', content: 'keyed request once' }] };
  const k1 = await alice.chat.completions.create(body, key);
  const k2 = await alice.chat.completions.create(body, key);
  assert.equal(k2.id, k1.id);
  assert.equal(k2.choices[0].message.content, k1.choices[0].message.content);
  assert.equal((await upstream('keyed request once')).length, 1);
  // The same key for another request is refused by name.
  await rejects(alice.chat.completions.create({ ...body, messages: [{ role: 'user', content: 'other' }] }, key),
    OpenAI.BadRequestError, (e) => assert.equal(e.param, 'Idempotency-Key'));

  // A provider that stays down: every SDK attempt fails before any token, nothing is charged.
  const retrying = client(env.ALICE_KEY, { maxRetries: 2 });
  const p0 = promptCount();
  const id0 = lastPromptId();
  await rejects(retrying.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: '[[fake:status=503]] down for good' }] }), OpenAI.InternalServerError);
  assert.equal(promptCount(), p0 + 3, 'three attempts, three failed turns');
  await sleep(500);  // the outbox would have delivered a charge by now
  assert.equal(+psql('aichat_usage', `SELECT count(*) FROM usage_logs WHERE prompt_id > ${id0}`), 0);

  // An answer cut after tokens were consumed (and charged): the SDK is told not to retry.
  const p1 = promptCount();
  const cut = await rejects(retrying.chat.completions.create({ model: MODEL,
    messages: [{ role: 'user', content: '[[fake:drop_after=3 tokens=20]] charged once only' }] }),
  OpenAI.InternalServerError);
  assert.equal(cut.headers.get('x-should-retry'), 'false');
  assert.equal(promptCount(), p1 + 1, 'no retry');
  assert.equal((await upstream('charged once only')).length, 1);
  const charged = await ledger(lastPromptId());
  assert.ok(charged.completion_tokens >= 1 && charged.completion_tokens < 20, 'the partial answer is charged');
}

console.log(`PASS openai_sdk_test.mjs (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
