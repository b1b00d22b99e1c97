// deepseek.hpp: the building blocks of DeepSeek's models, header-only.
// This umbrella includes everything CPU-side; <deepseek/cuda.hpp> adds the CUDA backend.
#pragma once

#include "deepseek/core/device.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/parallel.hpp"
#include "deepseek/core/tensor.hpp"
#include "deepseek/io/checkpoint.hpp"
#include "deepseek/io/config.hpp"
#include "deepseek/io/safetensors.hpp"
#include "deepseek/io/weights.hpp"
#include "deepseek/models/model_info.hpp"
