# aichat_embed_migrations(<target> <dir> <namespace>): compiles every NNN_*.sql file
# in <dir> into the target as a sorted table, so a binary carries its own schema
# and needs no files at run time (containers, tests).
function(aichat_embed_migrations target dir ns)
  file(GLOB sql_files CONFIGURE_DEPENDS ${dir}/*.sql)
  list(SORT sql_files)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${target}_migrations.cc)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DOUT=${out} -DNS=${ns} "-DFILES=${sql_files}"
            -P ${PROJECT_SOURCE_DIR}/cmake/embed_sql_run.cmake
    DEPENDS ${sql_files} ${PROJECT_SOURCE_DIR}/cmake/embed_sql_run.cmake
    COMMENT "Embedding migrations for ${target}")
  target_sources(${target} PRIVATE ${out})
endfunction()
