// Storage for the user service, in domain types. pg_user_store.cc holds the SQL.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/jwt.h"

namespace aichat::user {

struct UserRecord {
  int64_t id = 0;
  std::string email;
  std::string password_hash;
  std::string display_name;
  Role role = Role::kUser;
  int32_t requests_per_minute = 0;
  absl::Time created_at;
  absl::Time updated_at;
};

struct ApiKeyRecord {
  int64_t id = 0;
  int64_t user_id = 0;
  std::string name;
  std::string prefix;
  absl::Time created_at;
  std::optional<absl::Time> last_used_at;
  std::optional<absl::Time> revoked_at;
};

class UserStore {
 public:
  virtual ~UserStore() = default;

  // A fresh user id, for an account whose id must be known before it is
  // created (its default budget is set in the usage service first).
  virtual absl::StatusOr<int64_t> NextUserId() = 0;
  // ALREADY_EXISTS when the email is taken. `id` from NextUserId(), or 0 for a new one.
  virtual absl::StatusOr<UserRecord> CreateUser(const std::string& email,
                                                const std::string& password_hash,
                                                const std::string& display_name,
                                                int32_t requests_per_minute, int64_t id) = 0;
  // NOT_FOUND when absent.
  virtual absl::StatusOr<UserRecord> FindUserByEmail(const std::string& email) = 0;
  virtual absl::StatusOr<UserRecord> GetUser(int64_t id) = 0;
  // Users with id > after_id, ascending.
  virtual absl::StatusOr<std::vector<UserRecord>> ListUsers(int64_t after_id, int limit) = 0;
  virtual absl::StatusOr<UserRecord> SetRole(int64_t id, Role role) = 0;
  virtual absl::StatusOr<UserRecord> SetRateLimit(int64_t id, int32_t requests_per_minute) = 0;

  virtual absl::Status InsertRefreshToken(int64_t user_id, const std::string& token_hash,
                                          absl::Time expires_at) = 0;
  // In one transaction: marks the old token used and stores the new one. NOT_FOUND
  // for an unknown or expired token; PERMISSION_DENIED when it was already used or
  // revoked — then every refresh token of that user is revoked (theft response).
  virtual absl::StatusOr<int64_t> RotateRefreshToken(const std::string& old_hash,
                                                     const std::string& new_hash,
                                                     absl::Time new_expires_at) = 0;
  // Idempotent.
  virtual absl::Status RevokeRefreshToken(const std::string& token_hash) = 0;

  virtual absl::StatusOr<ApiKeyRecord> CreateApiKey(int64_t user_id, const std::string& name,
                                                    const std::string& prefix,
                                                    const std::string& key_hash) = 0;
  virtual absl::StatusOr<std::vector<ApiKeyRecord>> ListApiKeys(int64_t user_id) = 0;
  // NOT_FOUND unless the key belongs to user_id.
  virtual absl::StatusOr<ApiKeyRecord> RevokeApiKey(int64_t user_id, int64_t key_id) = 0;
  // The owner of a valid (unrevoked) key, updating its last-used time; NOT_FOUND otherwise.
  virtual absl::StatusOr<UserRecord> UseApiKey(const std::string& key_hash) = 0;
};

}  // namespace aichat::user
