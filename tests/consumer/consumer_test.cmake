# cmake -P script run by CTest: install -> configure consumer -> build -> run.
# Inputs: BNORM_BINARY_DIR, CONSUMER_SOURCE_DIR, WORK_DIR, GENERATOR, CXX_COMPILER, BUILD_TYPE.
cmake_minimum_required(VERSION 3.20)

foreach(var BNORM_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "consumer_test.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run_step name)
  execute_process(COMMAND ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${name} failed (${rc})\n"
                        "command: ${ARGN}\nstdout:\n${out}\nstderr:\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

run_step("install" ${CMAKE_COMMAND} --install ${BNORM_BINARY_DIR} --prefix ${prefix}
         --config ${BUILD_TYPE})

foreach(f include/bnorm/bnorm.hpp include/bnorm/layers/batch_normalization.hpp)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "consumer test: ${f} was not installed")
  endif()
endforeach()
# Private headers (kernels, SIMD) stay private.
file(GLOB_RECURSE leaked ${prefix}/include/*/batch_norm.hpp ${prefix}/include/kernels/*)
if(leaked)
  message(FATAL_ERROR "consumer test: private headers installed: ${leaked}")
endif()

set(configure_args -S ${CONSUMER_SOURCE_DIR} -B ${build} -G ${GENERATOR}
                   -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=${BUILD_TYPE})
if(CXX_COMPILER)
  list(APPEND configure_args -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
endif()
run_step("configure" ${CMAKE_COMMAND} ${configure_args})
run_step("build" ${CMAKE_COMMAND} --build ${build} --config ${BUILD_TYPE})

find_program(consumer_exe NAMES bnorm_consumer PATHS ${build} ${build}/${BUILD_TYPE} NO_DEFAULT_PATH)
if(NOT consumer_exe)
  message(FATAL_ERROR "consumer test: bnorm_consumer was not built in ${build}")
endif()
run_step("run" ${consumer_exe})
if(NOT step_output MATCHES "bnorm consumer ok")
  message(FATAL_ERROR "consumer test: unexpected output:\n${step_output}")
endif()
message(STATUS "consumer output:\n${step_output}")
file(REMOVE_RECURSE ${WORK_DIR})
