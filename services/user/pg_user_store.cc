#include "services/user/pg_user_store.h"

namespace aichat::user {
namespace {

constexpr char kNextUserId[] = "SELECT nextval(pg_get_serial_sequence('users', 'id'))";
// $5 = 0 takes the next id of the sequence, as the column default would.
constexpr char kInsertUser[] =
    "INSERT INTO users (id, email, password_hash, display_name, requests_per_minute) "
    "VALUES (CASE WHEN $5::bigint > 0 THEN $5::bigint "
    "ELSE nextval(pg_get_serial_sequence('users', 'id')) END, $1, $2, $3, $4) "
    "RETURNING id, email, password_hash, display_name, role, "
    "requests_per_minute, created_at, updated_at";
constexpr char kUserByEmail[] =
    "SELECT id, email, password_hash, display_name, role, requests_per_minute, created_at, "
    "updated_at FROM users WHERE email = $1";
constexpr char kUserById[] =
    "SELECT id, email, password_hash, display_name, role, requests_per_minute, created_at, "
    "updated_at FROM users WHERE id = $1";
constexpr char kListUsers[] =
    "SELECT id, email, password_hash, display_name, role, requests_per_minute, created_at, "
    "updated_at FROM users WHERE id > $1 ORDER BY id LIMIT $2";
constexpr char kSetRole[] =
    "UPDATE users SET role = $2, updated_at = now() WHERE id = $1 RETURNING id, email, "
    "password_hash, display_name, role, requests_per_minute, created_at, updated_at";
constexpr char kSetRate[] =
    "UPDATE users SET requests_per_minute = $2, updated_at = now() WHERE id = $1 RETURNING id, "
    "email, password_hash, display_name, role, requests_per_minute, created_at, updated_at";

constexpr char kInsertRefresh[] =
    "INSERT INTO refresh_tokens (user_id, token_hash, expires_at) VALUES ($1, $2, $3)";
constexpr char kUseRefresh[] =
    "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1 AND used_at IS NULL "
    "AND revoked_at IS NULL AND expires_at > now() RETURNING user_id";
constexpr char kRefreshOwner[] =
    "SELECT user_id, expires_at > now() FROM refresh_tokens WHERE token_hash = $1";
constexpr char kRevokeAllRefresh[] =
    "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL";
constexpr char kRevokeRefresh[] =
    "UPDATE refresh_tokens SET revoked_at = now() WHERE token_hash = $1 AND revoked_at IS NULL";

constexpr char kInsertApiKey[] =
    "INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4) "
    "RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at";
constexpr char kListApiKeys[] =
    "SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys "
    "WHERE user_id = $1 ORDER BY id DESC";
constexpr char kRevokeApiKey[] =
    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 AND user_id = $2 "
    "RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at";
constexpr char kUseApiKey[] =
    "UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1 AND revoked_at IS NULL "
    "RETURNING user_id";

UserRecord ReadUser(const PgResult& r, int row) {
  UserRecord u;
  u.id = r.Int(row, 0);
  u.email = r.String(row, 1);
  u.password_hash = r.String(row, 2);
  u.display_name = r.String(row, 3);
  auto role = ParseRole(r.String(row, 4));
  u.role = role.ok() ? *role : Role::kUser;
  u.requests_per_minute = static_cast<int32_t>(r.Int(row, 5));
  u.created_at = r.Time(row, 6);
  u.updated_at = r.Time(row, 7);
  return u;
}

ApiKeyRecord ReadApiKey(const PgResult& r, int row) {
  ApiKeyRecord k;
  k.id = r.Int(row, 0);
  k.user_id = r.Int(row, 1);
  k.name = r.String(row, 2);
  k.prefix = r.String(row, 3);
  k.created_at = r.Time(row, 4);
  if (!r.IsNull(row, 5)) k.last_used_at = r.Time(row, 5);
  if (!r.IsNull(row, 6)) k.revoked_at = r.Time(row, 6);
  return k;
}

absl::StatusOr<UserRecord> OneUser(absl::StatusOr<PgResult> r) {
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError("user not found");
  return ReadUser(*r, 0);
}

}  // namespace

absl::StatusOr<UserRecord> PgUserStore::CreateUser(const std::string& email,
                                                   const std::string& password_hash,
                                                   const std::string& display_name,
                                                   int32_t requests_per_minute, int64_t id) {
  auto r = pool_->Exec(kInsertUser, {email, password_hash, display_name, requests_per_minute, id});
  if (!r.ok()) {
    if (absl::IsAlreadyExists(r.status())) {
      return absl::AlreadyExistsError("an account with this email already exists");
    }
    return r.status();
  }
  return ReadUser(*r, 0);
}

absl::StatusOr<int64_t> PgUserStore::NextUserId() {
  auto r = pool_->Exec(kNextUserId);
  if (!r.ok()) return r.status();
  return r->Int(0, 0);
}

absl::StatusOr<UserRecord> PgUserStore::FindUserByEmail(const std::string& email) {
  return OneUser(pool_->Exec(kUserByEmail, {email}));
}

absl::StatusOr<UserRecord> PgUserStore::GetUser(int64_t id) {
  return OneUser(pool_->Exec(kUserById, {id}));
}

absl::StatusOr<std::vector<UserRecord>> PgUserStore::ListUsers(int64_t after_id, int limit) {
  auto r = pool_->Exec(kListUsers, {after_id, limit});
  if (!r.ok()) return r.status();
  std::vector<UserRecord> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) out.push_back(ReadUser(*r, i));
  return out;
}

absl::StatusOr<UserRecord> PgUserStore::SetRole(int64_t id, Role role) {
  return OneUser(pool_->Exec(kSetRole, {id, RoleName(role)}));
}

absl::StatusOr<UserRecord> PgUserStore::SetRateLimit(int64_t id, int32_t requests_per_minute) {
  return OneUser(pool_->Exec(kSetRate, {id, requests_per_minute}));
}

absl::Status PgUserStore::InsertRefreshToken(int64_t user_id, const std::string& token_hash,
                                             absl::Time expires_at) {
  return pool_->Exec(kInsertRefresh, {user_id, token_hash, expires_at}).status();
}

absl::StatusOr<int64_t> PgUserStore::RotateRefreshToken(const std::string& old_hash,
                                                        const std::string& new_hash,
                                                        absl::Time new_expires_at) {
  int64_t user_id = 0;
  bool reused = false;
  absl::Status st = pool_->Transaction([&](PgConn& conn) -> absl::Status {
    reused = false;
    auto used = conn.Exec(kUseRefresh, {old_hash});
    if (!used.ok()) return used.status();
    if (used->rows() == 1) {
      user_id = used->Int(0, 0);
      return conn.Exec(kInsertRefresh, {user_id, new_hash, new_expires_at}).status();
    }
    auto owner = conn.Exec(kRefreshOwner, {old_hash});
    if (!owner.ok()) return owner.status();
    if (owner->rows() == 0 || !owner->Bool(0, 1)) {
      return absl::NotFoundError("refresh token unknown or expired");
    }
    // A used or revoked token presented again: someone holds a copy. Revoke the
    // whole family so neither party keeps a session.
    reused = true;
    return conn.Exec(kRevokeAllRefresh, {owner->Int(0, 0)}).status();
  });
  if (!st.ok()) return st;
  if (reused) return absl::PermissionDeniedError("refresh token already used");
  return user_id;
}

absl::Status PgUserStore::RevokeRefreshToken(const std::string& token_hash) {
  return pool_->Exec(kRevokeRefresh, {token_hash}).status();
}

absl::StatusOr<ApiKeyRecord> PgUserStore::CreateApiKey(int64_t user_id, const std::string& name,
                                                       const std::string& prefix,
                                                       const std::string& key_hash) {
  auto r = pool_->Exec(kInsertApiKey, {user_id, name, prefix, key_hash});
  if (!r.ok()) return r.status();
  return ReadApiKey(*r, 0);
}

absl::StatusOr<std::vector<ApiKeyRecord>> PgUserStore::ListApiKeys(int64_t user_id) {
  auto r = pool_->Exec(kListApiKeys, {user_id});
  if (!r.ok()) return r.status();
  std::vector<ApiKeyRecord> out;
  for (int i = 0; i < r->rows(); ++i) out.push_back(ReadApiKey(*r, i));
  return out;
}

absl::StatusOr<ApiKeyRecord> PgUserStore::RevokeApiKey(int64_t user_id, int64_t key_id) {
  auto r = pool_->Exec(kRevokeApiKey, {key_id, user_id});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError("API key not found");
  return ReadApiKey(*r, 0);
}

absl::StatusOr<UserRecord> PgUserStore::UseApiKey(const std::string& key_hash) {
  auto r = pool_->Exec(kUseApiKey, {key_hash});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError("API key unknown or revoked");
  return GetUser(r->Int(0, 0));
}

}  // namespace aichat::user
