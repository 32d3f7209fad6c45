// The OpenAI-compatible API's wire format alone: request decoding (every refusal names
// its parameter; unsupported parameters are refused, never dropped), the JSON answers
// (parsed back and checked field by field), ids, and how statuses become HTTP errors.
#include "services/ai-agent/http/openai_wire.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "absl/time/clock.h"
#include "services/ai-agent/http/api_error.h"

namespace aichat::agent {
namespace {

namespace json = boost::json;

std::string Param(std::string_view body) {
  ChatCompletionRequest r;
  auto e = DecodeChatCompletionRequest(body, &r);
  return e.has_value() ? e->param : "<accepted>";
}

TEST(ChatDecodeTest, TheUsualRequest) {
  ChatCompletionRequest r;
  auto e = DecodeChatCompletionRequest(
      R"({"model":"gpt-4o-mini","messages":[{"role":"system","content":"be brief"},
          {"role":"user","content":[{"type":"text","text":"a "},{"type":"text","text":"b"}]},
          {"role":"assistant","content":"ok","tool_calls":[],"refusal":null}],
          "stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":50,
          "temperature":0.5,"n":1,"top_p":1,"user":"u-1","metadata":{"conversation_id":"conv_7"}})",
      &r);
  ASSERT_FALSE(e.has_value()) << e->message;
  EXPECT_EQ(r.model, "gpt-4o-mini");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].content, "a b");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.max_output_tokens, 50);
  EXPECT_EQ(r.max_tokens_param, "max_completion_tokens");
  EXPECT_EQ(r.temperature, 0.5);
  EXPECT_EQ(r.conversation, "conv_7");
  // Nulls are absent.
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":null,
                      "max_tokens":null,"stream":null,"tools":null,"stop":null})"),
            "<accepted>");
}

TEST(ChatDecodeTest, EveryRefusalNamesItsParameter) {
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  auto with = [&](std::string extra) { return "{\"model\":\"m\"," + msgs + "," + extra + "}"; };
  EXPECT_EQ(Param(R"({"messages":[{"role":"user","content":"x"}]})"), "model");
  EXPECT_EQ(Param(R"({"model":"m"})"), "messages");
  EXPECT_EQ(Param(R"({"model":5,"messages":[]})"), "model");
  EXPECT_EQ(Param(R"({"model":"m","messages":[]})"), "messages");
  EXPECT_EQ(Param(R"({"model":"m","messages":"hi"})"), "messages");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"content":"x"}]})"), "messages[0].role");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"user"}]})"), "messages[0].content");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"user","content":7}]})"),
            "messages[0].content");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"user","content":"a\u0000b"}]})"),
            "messages[0].content");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"wizard","content":"x"}]})"),
            "messages[0].role");
  EXPECT_EQ(Param(with(R"("temperature":3)")), "temperature");
  EXPECT_EQ(Param(with(R"("temperature":"hot")")), "temperature");
  EXPECT_EQ(Param(with(R"("max_tokens":0)")), "max_tokens");
  EXPECT_EQ(Param(with(R"("max_tokens":1.5)")), "max_tokens");
  EXPECT_EQ(Param(with(R"("max_completion_tokens":99999999999)")), "max_completion_tokens");
  EXPECT_EQ(Param(with(R"("max_tokens":5,"max_completion_tokens":5)")), "max_completion_tokens");
  EXPECT_EQ(Param(with(R"("stream":"yes")")), "stream");
  EXPECT_EQ(Param(with(R"("stream_options":{"include_usage":true})")), "stream_options");
  EXPECT_EQ(Param(with(R"("metadata":{"conversation_id":12})")), "metadata.conversation_id");
}

TEST(ChatDecodeTest, UnsupportedParametersAreRefusedNotDropped) {
  const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
  auto with = [&](std::string extra) { return "{\"model\":\"m\"," + msgs + "," + extra + "}"; };
  for (auto [extra, param] : std::vector<std::pair<std::string, std::string>>{
           {R"("n":2)", "n"},
           {R"("tools":[{"type":"function"}])", "tools"},
           {R"("tool_choice":"auto")", "tool_choice"},
           {R"("functions":[{}])", "functions"},
           {R"("response_format":{"type":"json_object"})", "response_format"},
           {R"("logprobs":true)", "logprobs"},
           {R"("top_p":0.5)", "top_p"},
           {R"("presence_penalty":1)", "presence_penalty"},
           {R"("stop":["x"])", "stop"},
           {R"("seed":4)", "seed"},
           {R"("audio":{"voice":"alloy"})", "audio"},
           {R"("modalities":["text","audio"])", "modalities"},
           {R"("store":true)", "store"},
           {R"("metadata":{"team":"a"})", "metadata.team"},
           {R"("service_tier":"flex")", "service_tier"},
           {R"("reasoning_effort":"high")", "reasoning_effort"},
           {R"("stream":true,"stream_options":{"include_obfuscation":true})",
            "stream_options.include_obfuscation"},
           {R"("frobnicate":1)", "frobnicate"},
       }) {
    ChatCompletionRequest r;
    auto e = DecodeChatCompletionRequest(with(extra), &r);
    ASSERT_TRUE(e.has_value()) << extra;
    EXPECT_EQ(e->param, param) << extra;
    EXPECT_NE(e->message.find(param), std::string::npos) << e->message;
  }
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"user","content":[
      {"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}}]}]})"),
            "messages[0].content[1].type");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"tool","content":"x"}]})"),
            "messages[0].role");
  EXPECT_EQ(Param(R"({"model":"m","messages":[{"role":"user","content":"x","name":"bob"}]})"),
            "messages[0].name");
  // The neutral values are accepted.
  EXPECT_EQ(Param(with(R"("n":1,"top_p":1,"presence_penalty":0,"logprobs":false,
      "response_format":{"type":"text"},"modalities":["text"],"tool_choice":"none","store":false,
      "service_tier":"auto")")),
            "<accepted>");
}

TEST(ChatDecodeTest, HostileBodies) {
  ChatCompletionRequest r;
  std::string deep =
      R"({"model":"m","messages":)" + std::string(100, '[') + std::string(100, ']') + "}";
  auto e = DecodeChatCompletionRequest(deep, &r);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, "invalid_json");
  EXPECT_NE(e->message.find("deeper"), std::string::npos);
  EXPECT_TRUE(DecodeChatCompletionRequest("{\"model\":\"m\xff\"}", &r).has_value());
  EXPECT_TRUE(DecodeChatCompletionRequest(R"({"model":"\ud800"})", &r).has_value());
  EXPECT_TRUE(DecodeChatCompletionRequest("[]", &r).has_value());
  EXPECT_TRUE(DecodeChatCompletionRequest("", &r).has_value());
  EXPECT_TRUE(DecodeChatCompletionRequest(R"({"model":"m",})", &r).has_value());
  std::string long_model =
      R"({"model":")" + std::string(101, 'a') + R"(","messages":[{"role":"user","content":"x"}]})";
  EXPECT_EQ(DecodeChatCompletionRequest(long_model, &r)->param, "model");
}

TEST(ResponseDecodeTest, InputsAndConversations) {
  CreateResponseRequest r;
  ASSERT_FALSE(DecodeCreateResponseRequest(
                   R"({"model":"m","input":"hi","conversation":{"id":"conv_3"},"stream":true})", &r)
                   .has_value());
  ASSERT_EQ(r.input.size(), 1u);
  EXPECT_EQ(r.input[0].role, "user");
  EXPECT_EQ(r.conversation, "conv_3");
  ASSERT_FALSE(DecodeCreateResponseRequest(
                   R"({"model":"m","input":[{"role":"developer","content":"d"},
                       {"type":"message","role":"user","content":[{"type":"input_text","text":"q"}]},
                       {"id":"msg_r1","type":"message","status":"completed","role":"assistant",
                        "content":[{"type":"output_text","text":"a","annotations":[]}]}],
                       "previous_response_id":"resp_9","store":true,"tools":[],
                       "text":{"format":{"type":"text"}},"truncation":"auto"})",
                   &r)
                   .has_value());
  ASSERT_EQ(r.input.size(), 3u);
  EXPECT_EQ(r.input[1].content, "q");
  EXPECT_EQ(r.previous_response_id, "resp_9");
  auto refused = [](std::string body) {
    CreateResponseRequest r;
    auto e = DecodeCreateResponseRequest(body, &r);
    return e.has_value() ? e->param : "<accepted>";
  };
  EXPECT_EQ(refused(R"({"model":"m"})"), "input");
  EXPECT_EQ(
      refused(
          R"({"model":"m","input":"x","conversation":"conv_1","previous_response_id":"resp_1"})"),
      "previous_response_id");
  EXPECT_EQ(
      refused(R"({"model":"m","input":[{"role":"user","content":[{"type":"input_image"}]}]})"),
      "input[0].content[0].type");
  EXPECT_EQ(refused(R"({"model":"m","input":[{"type":"function_call_output","output":"x"}]})"),
            "input[0].type");
  EXPECT_EQ(refused(R"({"model":"m","input":"x","tools":[{"type":"web_search"}]})"), "tools");
  EXPECT_EQ(refused(R"({"model":"m","input":"x","text":{"format":{"type":"json_object"}}})"),
            "text");
  EXPECT_EQ(refused(R"({"model":"m","input":"x","reasoning":{"effort":"high"}})"), "reasoning");
  EXPECT_EQ(refused(R"({"model":"m","input":"x","background":true})"), "background");
  EXPECT_EQ(refused(R"({"model":"m","input":"x","metadata":{"k":"v"}})"), "metadata");
}

TEST(ConversationDecodeTest, MetadataAndTheSystemItem) {
  CreateConversationRequest r;
  ASSERT_FALSE(DecodeCreateConversationRequest("", &r).has_value());
  ASSERT_FALSE(DecodeCreateConversationRequest(
                   R"({"metadata":{"title":"t","model":"gpt-4o"},
                       "items":[{"type":"message","role":"system","content":"be kind"}]})",
                   &r)
                   .has_value());
  EXPECT_EQ(r.title, "t");
  EXPECT_EQ(r.model, "gpt-4o");
  EXPECT_EQ(r.system_prompt, "be kind");
  auto e = DecodeCreateConversationRequest(R"({"items":[{"role":"user","content":"hi"}]})", &r);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->param, "items[0].role");
  EXPECT_EQ(DecodeCreateConversationRequest(R"({"metadata":{"owner":"x"}})", &r)->param,
            "metadata.owner");
  EXPECT_EQ(DecodeCreateConversationRequest(R"({"metadata":{"title":7}})", &r)->param,
            "metadata.title");
}

TEST(QueryDecodeTest, ListItems) {
  ListItemsQuery q;
  ASSERT_FALSE(DecodeListItemsQuery("limit=2&order=asc&after=msg_r4", &q).has_value());
  EXPECT_EQ(q.limit, 2);
  EXPECT_TRUE(q.ascending);
  EXPECT_EQ(q.after, "msg_r4");
  EXPECT_EQ(DecodeListItemsQuery("limit=0", &q)->param, "limit");
  EXPECT_EQ(DecodeListItemsQuery("limit=101", &q)->param, "limit");
  EXPECT_EQ(DecodeListItemsQuery("order=sideways", &q)->param, "order");
  EXPECT_EQ(DecodeListItemsQuery("include[]=x", &q)->param, "include");
  EXPECT_EQ(DecodeListItemsQuery("after=%zz", &q)->param, "");
  EXPECT_EQ(PercentDecode("a%2Fb+c"), "a/b+c");
  EXPECT_EQ(PercentDecode("a%2", false), std::nullopt);
}

TEST(IdsTest, StrictParsing) {
  EXPECT_EQ(ConversationApiId(12), "conv_12");
  EXPECT_EQ(ParseConversationApiId("conv_12"), 12);
  EXPECT_EQ(ParseConversationRef("12"), 12);
  EXPECT_EQ(ParseResponseApiId(ResponseApiId(34)), 34);
  for (const char* bad : {"conv_", "conv_0", "conv_012", "conv_-1", "conv_1x", "conv_ 1",
                          "conv_99999999999999999999", "resp_1", "12"}) {
    EXPECT_EQ(ParseConversationApiId(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(ParseResponseApiId("conv_3"), std::nullopt);
  EXPECT_EQ(CompletionApiId(5), "chatcmpl-5");
  EXPECT_EQ(AnswerItemId(5), "msg_r5");
}

TEST(EncodeTest, ChatCompletionAndChunks) {
  CompletionFacts c{.prompt_id = 7,
                    .created = 1700000000,
                    .model = "gpt-4o-mini",
                    .text = "hi \"there\"\n\x01",
                    .finish_reason = "length",
                    .usage = {10, 5, 2, 6300, false}};
  json::value v = json::parse(ChatCompletionJson(c));
  EXPECT_EQ(v.at("id"), "chatcmpl-7");
  EXPECT_EQ(v.at("object"), "chat.completion");
  EXPECT_EQ(v.at("choices").at(0).at("message").at("content"), "hi \"there\"\n\x01");
  EXPECT_EQ(v.at("choices").at(0).at("finish_reason"), "length");
  EXPECT_EQ(v.at("usage").at("total_tokens"), 15);
  EXPECT_EQ(v.at("usage").at("prompt_tokens_details").at("cached_tokens"), 2);
  EXPECT_EQ(v.at("usage").at("cost_nanos"), 6300);

  ChunkWriter w(7, 1700000000, "gpt-4o-mini", /*include_usage=*/true);
  auto event = [](const std::string& s) {
    EXPECT_EQ(s.rfind("data: ", 0), 0u);
    EXPECT_EQ(s.substr(s.size() - 2), "\n\n");
    return json::parse(s.substr(6, s.size() - 8));
  };
  EXPECT_EQ(event(w.Role()).at("choices").at(0).at("delta").at("role"), "assistant");
  std::string d;
  w.AppendDelta("h\u00e9\"", &d);
  json::value delta = event(d);
  EXPECT_EQ(delta.at("object"), "chat.completion.chunk");
  EXPECT_EQ(delta.at("choices").at(0).at("delta").at("content"), "h\u00e9\"");
  EXPECT_TRUE(delta.at("usage").is_null());
  EXPECT_EQ(event(w.Finish("stop")).at("choices").at(0).at("finish_reason"), "stop");
  json::value usage = event(w.Usage({10, 5, 0, 99, true}));
  EXPECT_TRUE(usage.at("choices").as_array().empty());
  EXPECT_EQ(usage.at("usage").at("estimated"), true);
  EXPECT_EQ(ChunkWriter::Done(), "data: [DONE]\n\n");
}

TEST(EncodeTest, ResponsesAndTheirEvents) {
  ResponseFacts f;
  f.prompt_id = 3;
  f.created = 1700000000;
  f.status = "completed";
  f.model = "m";
  f.conversation_id = 9;
  f.text = "answer";
  f.has_output = true;
  f.usage = TokenFigures{4, 2, 0, 10, false};
  json::value v = json::parse(ResponseJson(f));
  EXPECT_EQ(v.at("id"), "resp_3");
  EXPECT_EQ(v.at("conversation").at("id"), "conv_9");
  EXPECT_EQ(v.at("output").at(0).at("id"), "msg_r3");
  EXPECT_EQ(v.at("output").at(0).at("content").at(0).at("text"), "answer");
  EXPECT_EQ(v.at("usage").at("input_tokens"), 4);

  ResponseFacts start = f;
  start.has_output = false;
  ResponseEventWriter w(start);
  std::string all = w.Begin();
  w.AppendDelta("ans", &all);
  w.AppendDelta("wer", &all);
  all += w.Complete(f);
  std::vector<std::string> types;
  int64_t expect_seq = 0;
  for (size_t at = 0; (at = all.find("data: ", at)) != std::string::npos;) {
    size_t end = all.find("\n\n", at);
    json::value e = json::parse(all.substr(at + 6, end - at - 6));
    types.push_back(std::string(e.at("type").as_string()));
    EXPECT_EQ(e.at("sequence_number"), expect_seq++);
    at = end;
  }
  EXPECT_EQ(types,
            (std::vector<std::string>{"response.created", "response.in_progress",
                                      "response.output_item.added", "response.content_part.added",
                                      "response.output_text.delta", "response.output_text.delta",
                                      "response.output_text.done", "response.content_part.done",
                                      "response.output_item.done", "response.completed"}));
  ResponseEventWriter failing(start);
  std::string failed = failing.Begin() + failing.Fail("server_error", "provider: gone");
  EXPECT_NE(failed.find("event: error\n"), std::string::npos);
  EXPECT_NE(failed.find("event: response.failed\n"), std::string::npos);
}

TEST(ErrorMappingTest, StatusesBecomeTheSdksErrorClasses) {
  const absl::Time now = absl::FromUnixSeconds(1767225600);  // 2026-01-01T00:00:00Z
  ParamNames names = {{"max_output_tokens", "max_tokens"},
                      {"content", "messages[2].content"},
                      {"messages", "messages"},
                      {"temperature", "temperature"}};
  auto e = ApiErrorFromStatus(
      absl::InvalidArgumentError("max_output_tokens must be at most 16384 for model x"), names,
      now);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, "max_tokens");
  EXPECT_EQ(
      ApiErrorFromStatus(absl::InvalidArgumentError("content must not be empty"), names, now).param,
      "messages[2].content");
  EXPECT_EQ(
      ApiErrorFromStatus(absl::InvalidArgumentError("messages[3].content is not UTF-8"), names, now)
          .param,
      "messages[3].content");
  EXPECT_EQ(ApiErrorFromStatus(absl::InvalidArgumentError("secret_field is bad"), names, now).param,
            "");
  e = ApiErrorFromStatus(absl::InvalidArgumentError("model: unknown model \"x\""), names, now);
  EXPECT_EQ(e.http_status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  EXPECT_EQ(ApiErrorFromStatus(absl::UnauthenticatedError("expired"), names, now).http_status, 401);
  EXPECT_EQ(ApiErrorFromStatus(absl::PermissionDeniedError("no"), names, now).http_status, 403);
  EXPECT_EQ(
      ApiErrorFromStatus(absl::NotFoundError("conversation not found"), names, now).http_status,
      404);
  e = ApiErrorFromStatus(absl::AbortedError("the turn with this idempotency_key failed"), names,
                         now);
  EXPECT_EQ(e.http_status, 409);
  EXPECT_FALSE(e.should_retry);

  e = ApiErrorFromStatus(
      absl::ResourceExhaustedError("rate limit of 20 requests per minute reached; next request "
                                   "allowed at 2026-01-01T00:00:42Z"),
      names, now);
  EXPECT_EQ(e.http_status, 429);
  EXPECT_EQ(e.code, "rate_limit_exceeded");
  EXPECT_EQ(e.retry_after_seconds, 42);
  EXPECT_TRUE(e.should_retry);
  e = ApiErrorFromStatus(
      absl::ResourceExhaustedError("monthly budget of $1.00 reached (...); the budget resets at "
                                   "2026-02-01T00:00:00Z"),
      names, now);
  EXPECT_EQ(e.http_status, 429);
  EXPECT_EQ(e.type, "insufficient_quota");
  EXPECT_EQ(e.retry_after_seconds, 31 * 24 * 3600);
  EXPECT_FALSE(e.should_retry);

  EXPECT_EQ(ApiErrorFromStatus(absl::UnavailableError("provider: provider returned HTTP 503: busy"),
                               names, now)
                .http_status,
            503);
  e = ApiErrorFromStatus(absl::UnavailableError("provider: the provider closed the stream early"),
                         names, now);
  EXPECT_EQ(e.http_status, 502);
  EXPECT_EQ(e.code, "provider_error");
  EXPECT_EQ(ApiErrorFromStatus(absl::UnavailableError("usage service unavailable"), names, now)
                .http_status,
            503);
  EXPECT_EQ(ApiErrorFromStatus(absl::DeadlineExceededError("late"), names, now).http_status, 504);
  e = ApiErrorFromStatus(absl::InternalError("pq: relation ai_prompts is broken"), names, now);
  EXPECT_EQ(e.http_status, 500);
  EXPECT_EQ(e.message.find("ai_prompts"), std::string::npos);  // no internal detail

  json::value body =
      json::parse(ApiErrorFromRequest({"tools", "tools is not supported", "x"}).Body());
  EXPECT_EQ(body.at("error").at("param"), "tools");
  EXPECT_EQ(body.at("error").at("type"), "invalid_request_error");
  EXPECT_TRUE(json::parse(NotFoundError("gone").Body()).at("error").at("param").is_null());
}

}  // namespace
}  // namespace aichat::agent
