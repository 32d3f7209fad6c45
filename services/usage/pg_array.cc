#include "services/usage/pg_array.h"

namespace aichat::usage {

void PgArrayBuilder::Add(const PgArg& value) {
  if (size_++ > 0) {
    text_ += ',';
  }
  if (!value.value().has_value()) {
    text_ += "NULL";
    return;
  }
  // Inside double quotes only '"' and '\' are special (array_in's rules).
  text_ += '"';
  for (char c : *value.value()) {
    if (c == '"' || c == '\\') {
      text_ += '\\';
    }
    text_ += c;
  }
  text_ += '"';
}

}  // namespace aichat::usage
