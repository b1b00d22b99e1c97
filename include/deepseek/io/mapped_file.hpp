// A read-only memory map of a whole file (POSIX mmap). Checkpoint tensors are views into it, so
// a 700 GB checkpoint costs no copy and pages in as kernels touch it.
#pragma once

#include "deepseek/core/error.hpp"
#include "deepseek/core/file.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace deepseek::io {

class MappedFile {
 public:
  // Regular files and symlinks to them only (core/file.hpp): a FIFO or device is refused without
  // blocking.
  static std::shared_ptr<MappedFile> open(const std::string& path) {
    uint64_t size = 0;
    const int fd = open_regular_file(path, size);
    auto f = std::shared_ptr<MappedFile>(new MappedFile());
    f->path_ = path;
    f->size_ = static_cast<size_t>(size);
    if (f->size_ > 0) {
      void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw Error(std::string("mmap failed: ") + std::strerror(err), in_file(path));
      }
      f->data_ = static_cast<const uint8_t*>(p);
    }
    ::close(fd);
    return f;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

  // Maps every page now (reading from disk what is not cached) instead of one fault per first
  // touch: a model that fits in RAM then runs its first forward at full speed. MADV_POPULATE_READ
  // (Linux 5.14) does it in one call; older kernels get one read per page.
  void populate() const {
    if (!data_) return;
#ifdef MADV_POPULATE_READ
    if (::madvise(const_cast<uint8_t*>(data_), size_, MADV_POPULATE_READ) == 0) return;
#endif
    ::madvise(const_cast<uint8_t*>(data_), size_, MADV_WILLNEED);
    volatile uint8_t sink = 0;
    const size_t page = size_t(::sysconf(_SC_PAGESIZE));
    for (size_t i = 0; i < size_; i += page) sink = sink + data_[i];
    (void)sink;
  }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace deepseek::io
