// A one-dimensional PostgreSQL array literal ('{"a","b"}') bound as ONE text
// parameter: a statement such as `unnest($1::text[], $2::bigint[])` then takes any
// number of rows with a fixed SQL text (prepared once), and no input ever becomes
// SQL.
#pragma once

#include <string>

#include "common/pg.h"

namespace aichat::usage {

class PgArrayBuilder {
 public:
  // Appends one element in PostgreSQL's text form (as PgArg renders it); SQL NULL
  // for nullopt. Every other element is quoted and escaped, so any text is safe.
  void Add(const PgArg& value);
  int size() const { return size_; }
  // The literal, e.g. {"1","2"}; {} when empty.
  PgArg Build() const { return {text_ + "}"}; }

 private:
  std::string text_ = "{";
  int size_ = 0;
};

}  // namespace aichat::usage
