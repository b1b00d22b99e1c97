#!/usr/bin/env bash
# Copies the header-only dependencies of a CUDA build (Eigen, nlohmann/json, Catch2 v2, stb) from
# this Debian machine into .deps/ (git-ignored), with minimal CMake package files that point at the
# copies, so the GPU machine (no package registry) can configure the project: name .deps in the
# device call's `carry`, then run bench/cuda/device_check.sh there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
deps="$root/.deps"
rm -rf "$deps"
mkdir -p "$deps/include" "$deps/cmake"
cp -r /usr/include/eigen3 /usr/include/nlohmann /usr/include/catch2 /usr/include/stb "$deps/include/"
ver() { sed -n "s/^#define $2 \([0-9]*\).*/\1/p" "$1" | head -1; }
eigen_ver="$(ver /usr/include/eigen3/Eigen/src/Core/util/Macros.h EIGEN_WORLD_VERSION).$(ver /usr/include/eigen3/Eigen/src/Core/util/Macros.h EIGEN_MAJOR_VERSION).$(ver /usr/include/eigen3/Eigen/src/Core/util/Macros.h EIGEN_MINOR_VERSION)"
j=/usr/include/nlohmann/detail/abi_macros.hpp
json_ver="$(ver $j NLOHMANN_JSON_VERSION_MAJOR).$(ver $j NLOHMANN_JSON_VERSION_MINOR).$(ver $j NLOHMANN_JSON_VERSION_PATCH)"
catch_ver="$(ver /usr/include/catch2/catch.hpp CATCH_VERSION_MAJOR).$(ver /usr/include/catch2/catch.hpp CATCH_VERSION_MINOR).$(ver /usr/include/catch2/catch.hpp CATCH_VERSION_PATCH)"
package() {  # name version target include-subdir
  local dir="$deps/cmake/$1"
  mkdir -p "$dir"
  cat > "$dir/$1Config.cmake" <<CFG
# Written by bench/cuda/prepare_deps.sh: the header-only copy in .deps/include.
if(NOT TARGET $3)
  add_library($3 INTERFACE IMPORTED)
  set_target_properties($3 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "\${CMAKE_CURRENT_LIST_DIR}/../../include$4")
endif()
CFG
  cat > "$dir/$1ConfigVersion.cmake" <<CFG
set(PACKAGE_VERSION "$2")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
CFG
}
package Eigen3 "$eigen_ver" Eigen3::Eigen /eigen3
package nlohmann_json "$json_ver" nlohmann_json::nlohmann_json ""
package Catch2 "$catch_ver" Catch2::Catch2 ""
du -sh "$deps"
