# cmake -P driver for one packaging consumer.
#   MODE=add_subdirectory: configure + build CONSUMER_DIR with DEEPSEEK_ROOT=SOURCE_ROOT.
#   MODE=find_package: configure SOURCE_ROOT alone (tests/examples/bench/CUDA off), install it into
#   WORK_DIR/prefix, then configure + build CONSUMER_DIR with that prefix as its only hint.
# Either way the consumer then runs on CONFIG_JSON and its output must contain EXPECT.
foreach(v MODE SOURCE_ROOT CONSUMER_DIR WORK_DIR CONFIG_JSON EXPECT GENERATOR CXX)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_consumer.cmake: ${v} is not set")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
# Debug: no optimizer, so the consumer compiles in seconds; packaging is what is under test.
set(common -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Debug -DDEEPSEEK_CUDA=OFF)

if(MODE STREQUAL "add_subdirectory")
  run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/build ${common} -DDEEPSEEK_ROOT=${SOURCE_ROOT})
elseif(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} -S ${SOURCE_ROOT} -B ${WORK_DIR}/lib ${common}
      -DDEEPSEEK_BUILD_TESTS=OFF -DDEEPSEEK_BUILD_EXAMPLES=OFF -DDEEPSEEK_BUILD_BENCH=OFF
      -DDEEPSEEK_BUILD_FUZZ=OFF -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix)
  run(${CMAKE_COMMAND} --install ${WORK_DIR}/lib)
  if(NOT EXISTS ${WORK_DIR}/prefix/include/deepseek/deepseek.hpp)
    message(FATAL_ERROR "install did not place include/deepseek/deepseek.hpp under ${WORK_DIR}/prefix")
  endif()
  run(${CMAKE_COMMAND} -S ${CONSUMER_DIR} -B ${WORK_DIR}/build ${common}
      -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
      -DEXPECTED_PREFIX=${WORK_DIR}/prefix)
else()
  message(FATAL_ERROR "unknown MODE ${MODE}")
endif()

run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
# IMAGE (optional): also decode that image; the output must then contain EXPECT_IMAGE as well.
run(${WORK_DIR}/build/consumer ${CONFIG_JSON} ${IMAGE})
foreach(e EXPECT EXPECT_IMAGE)
  if(NOT DEFINED ${e})
    continue()
  endif()
  string(FIND "${last_output}" "${${e}}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "consumer printed:\n${last_output}\nexpected to find: ${${e}}")
  endif()
endforeach()
message(STATUS "${MODE} consumer: ${last_output}")
