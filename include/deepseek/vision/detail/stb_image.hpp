// Private copy of stb_image (public domain, Sean Barrett) for deepseek/vision/image.hpp.
//
// The library is header-only, so the stb implementation is compiled into every translation unit
// that includes the vision headers, with internal linkage (STB_IMAGE_STATIC): no symbol clashes
// between our TUs, none with a consumer's own stb_image in another TU, and nothing to link.
// Only the four formats the OCR front end reads are compiled (PNG, JPEG, BMP, GIF), from memory
// only (we read files ourselves, so a path is never handed to C stdio). Debian ships the header
// as <stb/stb_image.h> (libstb-dev); a vendored <stb_image.h> on the include path works too.
// This file is marked a system header so stb's own code does not trip our -Wall -Wextra -Werror.
#pragma once
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC system_header
#endif

#if defined(STBI_INCLUDE_STB_IMAGE_H) && !defined(DEEPSEEK_STB_IMAGE_PRIVATE)
#error "deepseek/vision compiles a private static stb_image: include it before any other stb_image.h"
#endif

#ifndef DEEPSEEK_STB_IMAGE_PRIVATE
#define DEEPSEEK_STB_IMAGE_PRIVATE 1
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#if defined(__has_include)
#if __has_include(<stb/stb_image.h>)
#include <stb/stb_image.h>
#else
#include <stb_image.h>
#endif
#else
#include <stb/stb_image.h>
#endif
#undef STB_IMAGE_IMPLEMENTATION
#endif
