// `aichat conversations`: list, new, show (with messages), rename, delete.
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "aichat/conversation/v1/conversation.grpc.pb.h"
#include "cli/commands.h"

namespace aichat::cli {
namespace {

using conversation::v1::ConversationService;

constexpr char kConversationsUsage[] =
    "aichat conversations [list | new [--title T] [--model M] [--system S] | show ID | "
    "rename ID TITLE | delete ID]";

const char* RoleWord(conversation::v1::MessageRole r) {
  switch (r) {
    case conversation::v1::MESSAGE_ROLE_USER:
      return "you";
    case conversation::v1::MESSAGE_ROLE_ASSISTANT:
      return "assistant";
    case conversation::v1::MESSAGE_ROLE_SYSTEM:
      return "system";
    default:
      return "?";
  }
}

std::string ConversationLine(const conversation::v1::Conversation& c) {
  return absl::StrFormat("%-6d %-20s %4d msgs  %-14s %s", c.id(),
                         FormatTime(c.updated_at().seconds()), c.message_count(),
                         c.model().empty() ? "(default)" : c.model(),
                         c.title().empty() ? "(untitled)" : c.title());
}

int List(Cli& cli, ConversationService::Stub& stub) {
  conversation::v1::ListConversationsResponse all;
  std::string token;
  do {
    auto ctx = cli.Context(true);
    if (!ctx) return kAuth;
    conversation::v1::ListConversationsRequest req;
    req.set_page_size(500);
    req.set_page_token(token);
    conversation::v1::ListConversationsResponse resp;
    auto st = stub.ListConversations(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("conversations", st);
    for (auto& c : *resp.mutable_conversations()) *all.add_conversations() = std::move(c);
    token = resp.next_page_token();
  } while (!token.empty());
  std::string text;
  for (const auto& c : all.conversations()) absl::StrAppend(&text, ConversationLine(c), "\n");
  cli.Print(all, text.empty() ? "No conversations yet (aichat chat starts one)." : text);
  return kOk;
}

int New(Cli& cli, ConversationService::Stub& stub, Args args) {
  conversation::v1::CreateConversationRequest req;
  std::string v;
  if (TakeFlag(args, "title", &v)) req.set_title(v);
  if (TakeFlag(args, "model", &v)) req.set_model(v);
  if (TakeFlag(args, "system", &v)) req.set_system_prompt(v);
  if (!args.empty()) return cli.Usage(kConversationsUsage);
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  conversation::v1::Conversation resp;
  auto st = stub.CreateConversation(ctx.get(), req, &resp);
  if (!st.ok()) return cli.Fail("conversations new", st);
  cli.Print(resp,
            absl::StrCat("Created conversation ", resp.id(), ". Next: aichat chat ", resp.id()));
  return kOk;
}

int Show(Cli& cli, ConversationService::Stub& stub, int64_t id) {
  auto ctx = cli.Context(true);
  if (!ctx) return kAuth;
  conversation::v1::GetConversationRequest greq;
  greq.set_id(id);
  conversation::v1::Conversation conv;
  auto st = stub.GetConversation(ctx.get(), greq, &conv);
  if (!st.ok()) return cli.Fail("conversations show", st);
  conversation::v1::ListMessagesResponse msgs;
  std::string token;
  do {
    auto mctx = cli.Context(true);
    if (!mctx) return kAuth;
    conversation::v1::ListMessagesRequest req;
    req.set_conversation_id(id);
    req.set_page_size(500);
    req.set_page_token(token);
    conversation::v1::ListMessagesResponse resp;
    st = stub.ListMessages(mctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("conversations show", st);
    for (auto& m : *resp.mutable_messages()) *msgs.add_messages() = std::move(m);
    token = resp.next_page_token();
  } while (!token.empty());
  if (cli.json()) {
    cli.Print(conv, "");
    cli.Print(msgs, "");
    return kOk;
  }
  std::cout << absl::StrFormat("Conversation %d: %s\nmodel %s · %d messages · created %s\n",
                               conv.id(), conv.title().empty() ? "(untitled)" : conv.title(),
                               conv.model().empty() ? "(default)" : conv.model(),
                               conv.message_count(), FormatTime(conv.created_at().seconds()));
  if (!conv.system_prompt().empty()) std::cout << "system: " << conv.system_prompt() << "\n";
  for (const auto& m : msgs.messages()) {
    std::cout << "\n"
              << RoleWord(m.role()) << (m.superseded() ? " (replaced by a regenerated answer)" : "")
              << ":\n"
              << m.content() << "\n";
  }
  return kOk;
}

}  // namespace

int Conversations(Cli& cli, const Args& args) {
  auto stub = ConversationService::NewStub(cli.Channel("conversation"));
  std::string sub = args.empty() ? "list" : args[0];
  int64_t id = 0;
  bool has_id = args.size() >= 2 && absl::SimpleAtoi(args[1], &id);
  if (sub == "list" && args.size() <= 1) return List(cli, *stub);
  if (sub == "new") return New(cli, *stub, Args(args.begin() + 1, args.end()));
  if (sub == "show" && has_id && args.size() == 2) return Show(cli, *stub, id);
  if (sub == "rename" && has_id && args.size() >= 3) {
    auto ctx = cli.Context(true);
    if (!ctx) return kAuth;
    conversation::v1::UpdateConversationRequest req;
    req.set_id(id);
    req.set_title(absl::StrJoin(args.begin() + 2, args.end(), " "));
    conversation::v1::Conversation resp;
    auto st = stub->UpdateConversation(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("conversations rename", st);
    cli.Print(resp, ConversationLine(resp));
    return kOk;
  }
  if (sub == "delete" && has_id && args.size() == 2) {
    auto ctx = cli.Context(true);
    if (!ctx) return kAuth;
    conversation::v1::DeleteConversationRequest req;
    req.set_id(id);
    conversation::v1::DeleteConversationResponse resp;
    auto st = stub->DeleteConversation(ctx.get(), req, &resp);
    if (!st.ok()) return cli.Fail("conversations delete", st);
    cli.Print(resp, absl::StrCat("Deleted conversation ", id, "."));
    return kOk;
  }
  return cli.Usage(kConversationsUsage);
}

}  // namespace aichat::cli
