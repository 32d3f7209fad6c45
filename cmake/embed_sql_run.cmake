# Script mode helper for aichat_embed_migrations: writes a .cc with one
# raw-string literal per migration file.
string(REPLACE "|" ";" FILES "${FILES}")
set(body "// Generated from migrations/*.sql; do not edit.\n#include \"common/migrations.h\"\n\nnamespace ${NS} {\n\nconst std::vector<aichat::Migration>& Migrations() {\n  static const auto* const kMigrations = new std::vector<aichat::Migration>{\n")
foreach(f ${FILES})
  get_filename_component(name ${f} NAME)
  string(REGEX MATCH "^[0-9]+" version ${name})
  math(EXPR version "${version}")
  file(READ ${f} sql)
  string(APPEND body "      {${version}, \"${name}\", R\"__aichat_sql__(${sql})__aichat_sql__\"},\n")
endforeach()
string(APPEND body "  };\n  return *kMigrations;\n}\n\n}  // namespace ${NS}\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
