# Makes the hostile inputs for tests/cli (issue 14) under OUT from the committed fixtures:
# config.json variants next to symlinks to the fixture weights (symlinks are how Hugging Face's
# cache holds files, and must work), FIFOs in place of files, a shard index with a NUL in a shard
# name, checkpoints with NaN / inf weights (POISON: the poison_tensor helper), and text inputs.
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
set(fp8 ${FIXTURES}/models/v3_fp8)
file(READ ${fp8}/config.json base)

# A copy of the FP8 fixture whose config.json is CONFIG.
function(model_with name config)
  file(MAKE_DIRECTORY ${OUT}/${name})
  file(WRITE ${OUT}/${name}/config.json "${config}")
  foreach(f model.safetensors.index.json model-00001-of-00002.safetensors model-00002-of-00002.safetensors)
    file(CREATE_LINK ${fp8}/${f} ${OUT}/${name}/${f} SYMBOLIC)
  endforeach()
endfunction()

function(model_set name json_path value)
  string(JSON cfg SET "${base}" ${json_path} "${value}")
  model_with(${name} "${cfg}")
endfunction()

model_with(symlinked "${base}")
string(REPEAT "[" 100000 open)
string(REPEAT "]" 100000 close)
string(JSON hidden GET "${base}" hidden_size)
string(REPLACE "\"hidden_size\": ${hidden}" "\"hidden_size\": ${open}${hidden}${close}" deep "${base}")
model_with(deep_hidden "${deep}")
string(JSON rope_type GET "${base}" rope_scaling type)
string(REPLACE "\"type\": \"${rope_type}\"" "\"type\": ${open}\"${rope_type}\"${close}" deep_rope "${base}")
model_with(deep_rope "${deep_rope}")
model_set(block_2p32 quantization_config "{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"weight_block_size\": [4294967424, 128]}")
model_set(block_2p31 quantization_config "{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"weight_block_size\": [2147483648, 128]}")
model_set(block_64 quantization_config "{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"weight_block_size\": [64, 128]}")
model_set(eps_negative rms_norm_eps -1)
model_set(eos_list eos_token_id "[1, -7]")
model_set(hidden_1e12 hidden_size 1000000000000)
model_set(topk_huge index_topk 1099511627776)
model_set(mtp_65 num_nextn_predict_layers 65)

# A shard name with an embedded NUL ("...safetensors\u0000x" once opened the shard before the NUL).
model_with(nul_shard "${base}")
file(REMOVE ${OUT}/nul_shard/model.safetensors.index.json)
file(WRITE ${OUT}/nul_shard/model.safetensors.index.json
     "{\"weight_map\": {\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\\u0000x\"}}")

# FIFOs in place of the weights and of config.json: refused at once, never a blocking open().
file(MAKE_DIRECTORY ${OUT}/fifo_weights ${OUT}/fifo_config)
file(WRITE ${OUT}/fifo_weights/config.json "${base}")
execute_process(COMMAND mkfifo ${OUT}/fifo_weights/model.safetensors ${OUT}/fifo_config/config.json RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mkfifo failed")
endif()

# NaN weights in layer 1, inf in lm_head (f32 fixture).
set(f32 ${FIXTURES}/models/v3_noqlora_f32)
foreach(spec "nan_layer1|model.layers.1.post_attention_layernorm.weight|nan" "inf_head|lm_head.weight|inf"
             "nan_embed|model.embed_tokens.weight|nan")
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 tensor)
  list(GET spec 2 value)
  execute_process(COMMAND ${POISON} ${f32} ${OUT}/${name} ${tensor} ${value} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "poison_tensor failed for ${name}")
  endif()
endforeach()
# NaN in the MTP module's hnorm (f32 fixture with one MTP module, model.layers.2).
execute_process(COMMAND ${POISON} ${FIXTURES}/models/v3_mtp_shared ${OUT}/nan_mtp model.layers.2.hnorm.weight nan RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "poison_tensor failed for nan_mtp")
endif()

# Chat messages with a role the template does not know; a deeply nested messages file.
file(WRITE ${OUT}/wizard.json "[{\"role\": \"wizard\", \"content\": \"hi\"}, {\"role\": \"user\", \"content\": \"x\"}]")
file(WRITE ${OUT}/deep_messages.json "${open}${close}")
file(WRITE ${OUT}/deep_line.jsonl "{\"text\": ${open}${close}}\n")
file(WRITE ${OUT}/ids.txt "1 2 3\n")
