# Runs CMD (arguments separated by "|") with a 20 s timeout, optionally with INPUT as stdin, and
# checks the exit code is RC and that stderr contains MATCH (a literal fragment, not a regex).
# A timeout (a hang, e.g. a blocking open of a FIFO) or a signal fails the test.
string(REPLACE "|" ";" cmd "${CMD}")
set(input_args)
if(DEFINED INPUT)
  set(input_args INPUT_FILE ${INPUT})
endif()
execute_process(COMMAND ${cmd} ${input_args} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 20)
if(NOT "${rc}" STREQUAL "${RC}")
  message(FATAL_ERROR "exit code '${rc}', expected ${RC}\n  command: ${CMD}\n  stderr: ${err}")
endif()
string(FIND "${err}" "${MATCH}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "stderr lacks '${MATCH}'\n  command: ${CMD}\n  stderr: ${err}")
endif()
