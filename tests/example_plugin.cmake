# Installs the SDK from the build tree, builds examples/hello-plugin against it with
# find_package(sightline), and checks that the host loads the result and validates its config.
foreach(var SOURCE_DIR BUILD_DIR SIGHTLINE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "example_plugin.cmake needs -D${var}=...")
  endif()
endforeach()
set(prefix ${BUILD_DIR}/example-plugin/install)
set(build ${BUILD_DIR}/example-plugin/build)
file(REMOVE_RECURSE ${BUILD_DIR}/example-plugin)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}${err}" PARENT_SCOPE)
endfunction()

run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/hello-plugin -B ${build} -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS=-Wall -Wextra -Werror")
run(${CMAKE_COMMAND} --build ${build})
if(NOT EXISTS ${build}/libsightline_features_hello.so)
  message(FATAL_ERROR "the example did not produce libsightline_features_hello.so")
endif()
run(${SIGHTLINE} --set "plugins.paths=[${build}]" plugins describe features-hello)
if(NOT last_output MATCHES "grid-sampled 8x8 patch descriptors")
  message(FATAL_ERROR "sightline did not describe the example plugin:\n${last_output}")
endif()
# The host validates the example's schema: a bad value must be refused with the key's name.
execute_process(COMMAND ${SIGHTLINE} --set "plugins.paths=[${build}]" --set pipelines.orb.features.type=hello
                        --set pipelines.orb.features.grid=1 config check
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "pipelines.orb.features.grid")
  message(FATAL_ERROR "a bad value for the example plugin was not refused:\n${out}${err}")
endif()
message(STATUS "example plugin built against the installed SDK and loaded by the host")
