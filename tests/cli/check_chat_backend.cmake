# `deepseek-cli chat --backend BACKEND` over a two-turn conversation from a pipe (the second turn
# reuses the first one's cache: ChatSession::truncate / append), greedy with an f32 cache. Where it
# runs (a GPU machine, for cuda) its answers must equal --backend cpu's; where it cannot, it must
# fail with the message that says why (no GPU, or a build without the CUDA backend), like
# `generate --backend cuda`. Exact equality as check_generate.cmake's cuda run: these greedy steps
# are not near ties.
set(_input ${CMAKE_CURRENT_BINARY_DIR}/chat_backend_input.txt)
file(WRITE ${_input} "What is a list?\nTell me more\n/exit\n")
set(_chat ${CLI} chat --model ${MODEL} --greedy --max-new 12 --cache-dtype f32)
execute_process(COMMAND ${_chat} --backend ${BACKEND} INPUT_FILE ${_input} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 120)
if(NOT rc EQUAL 0)
  if(err MATCHES "needs a GPU, and this machine has none|--backend ${BACKEND} is not available")
    message(STATUS "--backend ${BACKEND} unavailable here, as it says: ${err}")
    return()
  endif()
  message(FATAL_ERROR "chat --backend ${BACKEND} failed (${rc})\n  stderr: ${err}")
endif()
execute_process(COMMAND ${_chat} --backend cpu INPUT_FILE ${_input} RESULT_VARIABLE rc_cpu OUTPUT_VARIABLE out_cpu ERROR_VARIABLE err_cpu
                TIMEOUT 120)
if(NOT rc_cpu EQUAL 0)
  message(FATAL_ERROR "chat --backend cpu failed (${rc_cpu})\n  stderr: ${err_cpu}")
endif()
if(NOT out STREQUAL out_cpu)
  message(FATAL_ERROR "chat answers differ\n  --backend ${BACKEND}: ${out}\n  --backend cpu: ${out_cpu}")
endif()
