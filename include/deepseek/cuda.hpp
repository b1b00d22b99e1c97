// cuda.hpp: the CUDA backend of deepseek.hpp (needs the CUDA toolkit; link deepseek::cuda).
//
// Includes core/ and backend/cuda/ only, never Eigen or the CPU kernels, so .cu translation
// units stay free of Eigen (which warns under nvcc 13) and build with -Werror. A program that
// wants both backends includes <deepseek/deepseek.hpp> from its host .cpp files as well.
#pragma once

#include "deepseek/core/device.hpp"
#include "deepseek/core/dtype.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/tensor.hpp"

#include "deepseek/backend/cuda/memory.cuh"

// The kernels and Ops<cuda> (backend/cuda/ops.cuh) for translation units nvcc compiles; a host
// .cpp that includes this header gets device memory and copies only.
#if defined(__CUDACC__)
#include "deepseek/backend/cuda/ops.cuh"
#endif
