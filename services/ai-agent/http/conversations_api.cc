// The Conversations subset: create, get and delete a conversation, and list its
// messages as items. Every call acts for the caller through the conversation
// service, so another user's conversation answers 404 exactly like a missing one.
#include <algorithm>
#include <deque>

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

// What a listing keeps while it reads the conversation oldest first: at most
// limit + 1 items (one more than the page, to know whether more follow), never
// the whole conversation.
struct ItemWalk {
  ListItemsQuery query;
  std::deque<ItemFacts> kept;
  bool after_found = false;
  bool done = false;  // nothing later can change the answer
  int seen = 0;

  void Add(ItemFacts item) {
    const size_t cap = static_cast<size_t>(query.limit) + 1;
    if (query.ascending) {
      if (!query.after.empty() && !after_found) {
        after_found = item.id == query.after;
        return;
      }
      kept.push_back(std::move(item));
      done = kept.size() >= cap;
      return;
    }
    // Newest first: the page is the newest items older than `after` (or the newest).
    if (!query.after.empty() && item.id == query.after) {
      after_found = done = true;
      return;
    }
    kept.push_back(std::move(item));
    if (kept.size() > cap) kept.pop_front();
  }
};

// Reads the conversation's messages page by page (oldest first), then answers the
// page of items the query asks for. Superseded answers (regenerated) are left out.
void WalkMessages(std::shared_ptr<ApiCall> call, int64_t conversation_id,
                  std::shared_ptr<ItemWalk> walk, std::string page_token) {
  ConversationPeer* peer = call->deps->conversation;
  peer->ListMessages(
      ForUser(*call), conversation_id, 500, page_token,
      [call, conversation_id, walk = std::move(walk)](absl::StatusOr<MessagePage> page) mutable {
        if (!page.ok()) return ReplyStatus(*call, page.status());
        for (auto& m : page->messages) {
          if (walk->done) break;
          ++walk->seen;
          if (m.superseded) continue;
          const bool answer = m.role == MessageRole::kAssistant && m.prompt_id > 0;
          walk->Add({answer ? AnswerItemId(m.prompt_id) : MessageItemId(m.id), RoleName(m.role),
                     std::move(m.content)});
        }
        if (!walk->done && !page->next_page_token.empty()) {
          if (walk->seen >= call->options->max_listed_messages) {
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
          return WalkMessages(call, conversation_id, std::move(walk),
                              std::move(page->next_page_token));
        }
        const ListItemsQuery& query = walk->query;
        if (!query.after.empty() && !walk->after_found) {
          return ReplyError(
              *call->exchange,
              ApiErrorFromRequest(
                  {"after", absl::StrCat("after: no item '", query.after, "' in this conversation"),
                   ""}));
        }
        std::vector<ItemFacts> out(std::make_move_iterator(walk->kept.begin()),
                                   std::make_move_iterator(walk->kept.end()));
        if (!query.ascending) std::reverse(out.begin(), out.end());
        const bool more = out.size() > static_cast<size_t>(query.limit);
        if (more) out.resize(static_cast<size_t>(query.limit));
        ReplyJson(*call->exchange, 200, ItemListJson(out, more));
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
  auto walk = std::make_shared<ItemWalk>();
  walk->query = std::move(query);
  WalkMessages(call, *id, std::move(walk), "");
}

}  // namespace aichat::agent
