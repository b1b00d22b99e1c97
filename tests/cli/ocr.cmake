# deepseek-cli ocr on the tiny DeepSeek-OCR checkpoint of tests/reference/make_ocr_model_fixtures.py:
# greedy ids equal those of the official HF infer() (cli_greedy.txt), --dump-vision equals the decoder's
# input rows of the official run (checked by test_models "[.ocr_dump]"), and bad inputs fail naming the file.
# The greedy cases run with the exact f32 cache (the official run's), not the default bf16 one.
# Included from tests/cli/CMakeLists.txt.
set(_ocr ${DEEPSEEK_FIXTURES_DIR}/models/ocr_tiny)
file(STRINGS ${_ocr}/cli_greedy.txt _ocr_lines)
foreach(_line ${_ocr_lines})
  string(REGEX REPLACE " .*" "" _case "${_line}")
  string(REGEX REPLACE "^[a-z]+ " "" _ids "${_line}")
  set(_ocr_ids_${_case} "${_ids}")
endforeach()

# The defaults are infer()'s (gundam, the grounding document prompt, no_repeat_ngram 20): the gundam case.
add_test(NAME cli_ocr_gundam COMMAND deepseek-cli ocr --model ${_ocr} --image ${_ocr}/page.png --max-new 12 --print-ids --cache-dtype f32)
set_tests_properties(cli_ocr_gundam PROPERTIES PASS_REGULAR_EXPRESSION "(^|\n)${_ocr_ids_gundam}\n" FAIL_REGULAR_EXPRESSION "error:")
add_test(NAME cli_ocr_base COMMAND deepseek-cli ocr --model ${_ocr} --image ${_ocr}/page.png --mode base --prompt "<image>\nFree OCR."
                                   --max-new 12 --print-ids --stats --cache-dtype f32)
set_tests_properties(cli_ocr_base PROPERTIES
  PASS_REGULAR_EXPRESSION "(^|\n)${_ocr_ids_base}\n.*\"vision_tokens\":273,"
  FAIL_REGULAR_EXPRESSION "error:")
add_test(NAME cli_ocr_tiny COMMAND deepseek-cli ocr --model ${_ocr} --image ${_ocr}/page.png --mode tiny
                                   --prompt "  <image>\nParse the figure.\n" --max-new 12 --print-ids --cache-dtype f32)
set_tests_properties(cli_ocr_tiny PROPERTIES PASS_REGULAR_EXPRESSION "(^|\n)${_ocr_ids_tiny}\n" FAIL_REGULAR_EXPRESSION "error:")

# --dump-vision, then the rows compared with the official ones by the models test binary.
add_test(NAME cli_ocr_dump_vision COMMAND deepseek-cli ocr --model ${_ocr} --image ${_ocr}/page.png --max-new 1
                                          --dump-vision ${CMAKE_CURRENT_BINARY_DIR}/ocr_gundam_vision.npy)
set_tests_properties(cli_ocr_dump_vision PROPERTIES FIXTURES_SETUP ocr_dump)
if(TARGET test_models)
  add_test(NAME cli_ocr_dump_vision_check COMMAND test_models "[.ocr_dump]")
  set_tests_properties(cli_ocr_dump_vision_check PROPERTIES FIXTURES_REQUIRED ocr_dump
    ENVIRONMENT "DEEPSEEK_OCR_DUMP=${CMAKE_CURRENT_BINARY_DIR}/ocr_gundam_vision.npy;DEEPSEEK_OCR_DUMP_CASE=gundam")
endif()

# Text, --boxes and --out run (random weights: the text itself is not meaningful).
add_test(NAME cli_ocr_outputs COMMAND deepseek-cli ocr --model ${_ocr} --image ${_ocr}/page.png --mode tiny --max-new 8
                                      --boxes ${CMAKE_CURRENT_BINARY_DIR}/ocr_boxes.json --out ${CMAKE_CURRENT_BINARY_DIR}/ocr_out)
set_tests_properties(cli_ocr_outputs PROPERTIES PASS_REGULAR_EXPRESSION "page.png: 700x940, tiny, 1x1 tiles, 73 vision tokens"
                                                FAIL_REGULAR_EXPRESSION "error:")

# Bad inputs: non-zero exit and a message naming the file or the problem.
function(_ocr_fails_with model name regex)
  add_test(NAME ${name} COMMAND deepseek-cli ocr --model ${model} ${ARGN})
  set_tests_properties(${name} PROPERTIES WILL_FAIL TRUE)
  add_test(NAME ${name}_message COMMAND deepseek-cli ocr --model ${model} ${ARGN})
  set_tests_properties(${name}_message PROPERTIES PASS_REGULAR_EXPRESSION "${regex}")
endfunction()
function(_ocr_fails name regex)
  _ocr_fails_with(${_ocr} ${name} "${regex}" ${ARGN})
endfunction()
_ocr_fails(cli_ocr_missing_image "error: .*${_ocr}/missing\\.png" --image ${_ocr}/missing.png)
_ocr_fails(cli_ocr_directory_image "error: .*${DEEPSEEK_FIXTURES_DIR}/models" --image ${DEEPSEEK_FIXTURES_DIR}/models)
_ocr_fails(cli_ocr_no_image_placeholder "has no <image> placeholder" --image ${_ocr}/page.png --prompt "Free OCR.")
_ocr_fails(cli_ocr_two_placeholders "2 <image> placeholders but 1 image was given" --image ${_ocr}/page.png --prompt "<image><image>")
_ocr_fails(cli_ocr_bad_mode "unknown OCR mode 'huge'" --image ${_ocr}/page.png --mode huge)
_ocr_fails_with(${DEEPSEEK_FIXTURES_DIR}/models/v2_mha_ocr_decoder cli_ocr_text_model "not a DeepSeek-OCR checkpoint" --image ${_ocr}/page.png)

get_property(_poppler GLOBAL PROPERTY DEEPSEEK_CLI_HAVE_POPPLER)
if(_poppler)
  _ocr_fails(cli_ocr_pdf_not_pdf "not a readable PDF file .*${_ocr}/page\\.png" --pdf ${_ocr}/page.png)
  _ocr_fails(cli_ocr_pdf_directory "is a directory, not a PDF file .*${_ocr}" --pdf ${_ocr})
  _ocr_fails(cli_ocr_pdf_bad_pages "--pages: '2' is not a page number in 1\\.\\.1" --pdf ${_ocr}/page.pdf --pages 1-2)
  add_test(NAME cli_ocr_pdf COMMAND deepseek-cli ocr --model ${_ocr} --pdf ${_ocr}/page.pdf --pages 1 --mode tiny --max-new 4 --print-ids)
  set_tests_properties(cli_ocr_pdf PROPERTIES
    PASS_REGULAR_EXPRESSION "page\\.pdf page 1: 700x940, tiny.*<--- Page Split --->" FAIL_REGULAR_EXPRESSION "error:")
else()
  _ocr_fails(cli_ocr_pdf_unavailable "--pdf is not available: this deepseek-cli was built without poppler-cpp" --pdf ${_ocr}/page.pdf)
endif()
