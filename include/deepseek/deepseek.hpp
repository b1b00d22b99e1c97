// deepseek.hpp: the building blocks of DeepSeek's models, header-only.
// This umbrella includes everything CPU-side; <deepseek/cuda.hpp> adds the CUDA backend
// (DeepSeek-V4, models/deepseek_v4.hpp, runs on the CPU backend only so far).
// <deepseek/vision/pdf.hpp> (PDF pages via poppler-cpp, an optional dependency) is not included.
// The vision headers need stb_image on the include path, and decode JPEG with libjpeg-turbo when
// DEEPSEEK_HAVE_LIBJPEG=1 (deepseek::deepseek sets it and links libjpeg where CMake found it).
#pragma once

#include "deepseek/core/block_quant.hpp"
#include "deepseek/core/device.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/parallel.hpp"
#include "deepseek/core/tensor.hpp"
#include "deepseek/backend/cpu/backend.hpp"
#include "deepseek/io/checkpoint.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/safetensors.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/nn/attention.hpp"
#include "deepseek/nn/decoder_layer.hpp"
#include "deepseek/nn/dsa.hpp"
#include "deepseek/nn/kv_cache.hpp"
#include "deepseek/nn/mla.hpp"
#include "deepseek/nn/mlp.hpp"
#include "deepseek/nn/moe.hpp"
#include "deepseek/nn/mtp.hpp"
#include "deepseek/nn/rmsnorm.hpp"
#include "deepseek/nn/rope.hpp"
#include "deepseek/models/deepseek_ocr.hpp"
#include "deepseek/models/deepseek_v3.hpp"
#include "deepseek/models/deepseek_v4.hpp"
#include "deepseek/models/model_info.hpp"
#include "deepseek/models/mtp_head.hpp"
#include "deepseek/generate/generator.hpp"
#include "deepseek/generate/no_repeat_ngram.hpp"
#include "deepseek/generate/sampler.hpp"
#include "deepseek/generate/scheduler.hpp"
#include "deepseek/generate/speculative.hpp"
#include "deepseek/tokenizer.hpp"
#include "deepseek/vision/grounding.hpp"
#include "deepseek/vision/image.hpp"
#include "deepseek/vision/preprocess.hpp"
#include "deepseek/vision/resample.hpp"
