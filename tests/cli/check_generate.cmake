# Runs `deepseek-cli generate --greedy --print-ids` on the prompt in EXPECTED's first line and
# compares with the transformers greedy ids on its second line. The cache is f32 (exact): these ids
# come from transformers' f32 cache, and the default bf16 cache may flip a near-tie. The same prompt
# given as --ids @FILE (ids separated by newlines and spaces) must give the same ids. BACKEND
# (default cpu) is passed as --backend (bench/cuda/device_check.sh runs it with cuda).
if(NOT DEFINED BACKEND)
  set(BACKEND cpu)
endif()
file(STRINGS ${EXPECTED} lines)
list(GET lines 0 prompt)
list(GET lines 1 expected)
get_filename_component(_name ${MODEL} NAME)
set(_ids_file ${CMAKE_CURRENT_BINARY_DIR}/${_name}_prompt_ids.txt)
string(REPLACE "," "\n " _ids_lines "${prompt}")
file(WRITE ${_ids_file} "${_ids_lines}\n")
foreach(_ids ${prompt} @${_ids_file})
  execute_process(COMMAND ${CLI} generate --model ${MODEL} --ids ${_ids} --max-new 16 --greedy --print-ids --cache-dtype f32 --backend ${BACKEND}
                  OUTPUT_VARIABLE out RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "deepseek-cli failed (${rc}) with --ids ${_ids}")
  endif()
  if(NOT out STREQUAL expected)
    message(FATAL_ERROR "greedy ids differ with --ids ${_ids}\n  ours:         ${out}\n  transformers: ${expected}")
  endif()
endforeach()
