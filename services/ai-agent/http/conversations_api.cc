// The Conversations subset: create, get and delete a conversation, and list its
// messages as items. Every call acts for the caller through the conversation
// service, so another user's conversation answers 404 exactly like a missing one.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "services/ai-agent/http/api_internal.h"

namespace aichat::agent {
namespace {

ConversationFacts Facts(const ConversationInfo& c) {
  return {c.id, UnixSeconds(c.created_at), c.title, c.model};
}

const ParamNames kCreateNames = {
    {"title", "metadata.title"}, {"model", "metadata.model"}, {"system_prompt", "items"}};

// The path's conversation, or a 404 already answered.
std::optional<int64_t> ConversationId(const ApiCall& call) {
  auto id = ParseConversationApiId(call.id);
  if (!id.has_value()) {
    ReplyError(*call.exchange,
               NotFoundError(absl::StrCat("No conversation found with id '", call.id, "'")));
  }
  return id;
}

const char* RoleName(MessageRole r) {
  switch (r) {
    case MessageRole::kAssistant:
      return "assistant";
    case MessageRole::kSystem:
      return "system";
    case MessageRole::kUser:
      break;
  }
  return "user";
}

// Reads the conversation's messages page by page (oldest first), then answers the
// page of items the query asks for. Superseded answers (regenerated) are left out.
void WalkMessages(std::shared_ptr<ApiCall> call, int64_t conversation_id, ListItemsQuery query,
                  std::shared_ptr<std::vector<ItemFacts>> items, std::string page_token) {
  ConversationPeer* peer = call->deps->conversation;
  peer->ListMessages(
      ForUser(*call), conversation_id, 500, page_token,
      [call, conversation_id, query = std::move(query),
       items = std::move(items)](absl::StatusOr<MessagePage> page) mutable {
        if (!page.ok()) return ReplyStatus(*call, page.status());
        for (auto& m : page->messages) {
          if (m.superseded) continue;
          const bool answer = m.role == MessageRole::kAssistant && m.prompt_id > 0;
          items->push_back({answer ? AnswerItemId(m.prompt_id) : MessageItemId(m.id),
                            RoleName(m.role), std::move(m.content)});
        }
        if (!page->next_page_token.empty()) {
          if (static_cast<int>(items->size()) >= call->options->max_listed_messages) {
            return ReplyError(
                *call->exchange,
                ApiErrorFromRequest(
                    {"",
                     absl::StrCat("the conversation holds more than ",
                                  call->options->max_listed_messages,
                                  " messages; list them with "
                                  "aichat.conversation.v1.ConversationService/ListMessages"),
                     ""}));
          }
          return WalkMessages(call, conversation_id, std::move(query), std::move(items),
                              std::move(page->next_page_token));
        }
        std::vector<ItemFacts>& all = *items;
        if (!query.ascending) std::reverse(all.begin(), all.end());
        size_t start = 0;
        if (!query.after.empty()) {
          auto it = std::find_if(all.begin(), all.end(),
                                 [&](const ItemFacts& f) { return f.id == query.after; });
          if (it == all.end()) {
            return ReplyError(
                *call->exchange,
                ApiErrorFromRequest(
                    {"after",
                     absl::StrCat("after: no item '", query.after, "' in this conversation"), ""}));
          }
          start = static_cast<size_t>(it - all.begin()) + 1;
        }
        const size_t end = std::min(all.size(), start + static_cast<size_t>(query.limit));
        std::vector<ItemFacts> out(
            std::make_move_iterator(all.begin() + static_cast<ptrdiff_t>(start)),
            std::make_move_iterator(all.begin() + static_cast<ptrdiff_t>(end)));
        ReplyJson(*call->exchange, 200, ItemListJson(out, end < all.size()));
      });
}

}  // namespace

void CreateConversation(std::shared_ptr<ApiCall> call) {
  CreateConversationRequest req;
  if (auto e = DecodeCreateConversationRequest(call->request.body, &req)) {
    return ReplyError(*call->exchange, ApiErrorFromRequest(*e));
  }
  if (req.model.has_value() && !req.model->empty()) {
    // The conversation service keeps any name; the agent knows which exist.
    auto model = call->deps->models->Resolve(*req.model, "");
    if (!model.ok()) {
      ApiError e = ApiErrorFromStatus(model.status(), {}, absl::Now());
      e.param = "metadata.model";
      return ReplyError(*call->exchange, e);
    }
  }
  NewConversation n{req.title, req.model, req.system_prompt};
  call->deps->conversation->CreateConversation(
      ForUser(*call), n, [call](absl::StatusOr<ConversationInfo> info) {
        if (!info.ok()) return ReplyStatus(*call, info.status(), kCreateNames);
        ReplyJson(*call->exchange, 200, ConversationJson(Facts(*info)));
      });
}

void GetConversation(std::shared_ptr<ApiCall> call) {
  auto id = ConversationId(*call);
  if (!id.has_value()) return;
  call->deps->conversation->GetConversation(
      ForUser(*call), *id, [call](absl::StatusOr<ConversationInfo> info) {
        if (!info.ok()) return ReplyStatus(*call, info.status());
        ReplyJson(*call->exchange, 200, ConversationJson(Facts(*info)));
      });
}

void DeleteConversation(std::shared_ptr<ApiCall> call) {
  auto id = ConversationId(*call);
  if (!id.has_value()) return;
  call->deps->conversation->DeleteConversation(
      ForUser(*call), *id, [call, id = *id](absl::Status st) {
        if (!st.ok()) return ReplyStatus(*call, st);
        ReplyJson(*call->exchange, 200, ConversationDeletedJson(id));
      });
}

void ListConversationItems(std::shared_ptr<ApiCall> call) {
  ListItemsQuery query;
  if (auto e = DecodeListItemsQuery(call->request.query, &query)) {
    return ReplyError(*call->exchange, ApiErrorFromRequest(*e));
  }
  auto id = ConversationId(*call);
  if (!id.has_value()) return;
  WalkMessages(call, *id, std::move(query), std::make_shared<std::vector<ItemFacts>>(), "");
}

}  // namespace aichat::agent
