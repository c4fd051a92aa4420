# sightline_add_plugin(<kind>-<name> SOURCES ... [LIBRARIES ...])
# Builds libsightline_<kind>_<name>.so, the file the host looks for when a config says
# `<kind>: {type: <name>}`. Symbols are hidden except the manifest, so two plugins never shadow
# each other (Boost.DLL's "symbol shadowing problem").
function(sightline_add_plugin plugin)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  string(REPLACE "-" "_" target "sightline_${plugin}")
  add_library(${target} MODULE ${ARG_SOURCES})
  if(TARGET sightline::sdk)
    target_link_libraries(${target} PRIVATE sightline::sdk ${ARG_LIBRARIES})
  else()
    target_link_libraries(${target} PRIVATE sightline_sdk ${ARG_LIBRARIES})
  endif()
  set_target_properties(${target} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    PREFIX "lib")
  if(DEFINED SIGHTLINE_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${SIGHTLINE_PLUGIN_OUTPUT_DIR})
  endif()
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  set(SIGHTLINE_LAST_PLUGIN_TARGET ${target} PARENT_SCOPE)
endfunction()
