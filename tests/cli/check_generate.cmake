# Runs `deepseek-cli generate --greedy --print-ids` on the prompt in EXPECTED's first line and
# compares with the transformers greedy ids on its second line.
file(STRINGS ${EXPECTED} lines)
list(GET lines 0 prompt)
list(GET lines 1 expected)
execute_process(COMMAND ${CLI} generate --model ${MODEL} --ids ${prompt} --max-new 16 --greedy --print-ids
                OUTPUT_VARIABLE out RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "deepseek-cli failed (${rc})")
endif()
if(NOT out STREQUAL expected)
  message(FATAL_ERROR "greedy ids differ\n  ours:         ${out}\n  transformers: ${expected}")
endif()
