// UserStore on PostgreSQL.
#pragma once

#include "common/pg.h"
#include "services/user/user_store.h"

namespace aichat::user {

class PgUserStore : public UserStore {
 public:
  explicit PgUserStore(PgPool* pool) : pool_(pool) {}

  absl::StatusOr<int64_t> NextUserId() override;
  absl::StatusOr<UserRecord> CreateUser(const std::string& email, const std::string& password_hash,
                                        const std::string& display_name,
                                        int32_t requests_per_minute, int64_t id) override;
  absl::StatusOr<UserRecord> FindUserByEmail(const std::string& email) override;
  absl::StatusOr<UserRecord> GetUser(int64_t id) override;
  absl::StatusOr<std::vector<UserRecord>> ListUsers(int64_t after_id, int limit) override;
  absl::StatusOr<UserRecord> SetRole(int64_t id, Role role) override;
  absl::StatusOr<UserRecord> SetRateLimit(int64_t id, int32_t requests_per_minute) override;
  absl::Status InsertRefreshToken(int64_t user_id, const std::string& token_hash,
                                  absl::Time expires_at) override;
  absl::StatusOr<int64_t> RotateRefreshToken(const std::string& old_hash,
                                             const std::string& new_hash,
                                             absl::Time new_expires_at) override;
  absl::Status RevokeRefreshToken(const std::string& token_hash) override;
  absl::StatusOr<ApiKeyRecord> CreateApiKey(int64_t user_id, const std::string& name,
                                            const std::string& prefix,
                                            const std::string& key_hash) override;
  absl::StatusOr<std::vector<ApiKeyRecord>> ListApiKeys(int64_t user_id) override;
  absl::StatusOr<ApiKeyRecord> RevokeApiKey(int64_t user_id, int64_t key_id) override;
  absl::StatusOr<UserRecord> UseApiKey(const std::string& key_hash) override;

 private:
  PgPool* pool_;
};

}  // namespace aichat::user
