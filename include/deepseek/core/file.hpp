// Opening files named by untrusted input. Only regular files are read, and symlinks to them (a
// Hugging Face cache directory is made of symlinks into its blob store, so they are followed);
// a FIFO, device, socket or directory is refused by name instead of blocking forever in open()
// or failing later with a stream error that names no file. The open itself never blocks
// (O_NONBLOCK: a FIFO opens at once, is seen for what it is and closed).
#pragma once

#include "deepseek/core/checked.hpp"
#include "deepseek/core/error.hpp"
#include "deepseek/core/limits.hpp"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace deepseek {

inline const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

// A read-only descriptor of a regular file (following symlinks) and its size; throws otherwise.
// The caller closes it.
inline int open_regular_file(const std::string& path, uint64_t& size) {
  if (path.find('\0') != std::string::npos) throw Error("file name contains a NUL byte", in_file(excerpt(path)));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(std::string("cannot open: ") + std::strerror(errno), in_file(path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(std::string("cannot stat: ") + std::strerror(err), in_file(path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(std::string("is ") + file_kind(st.st_mode) + ", not a regular file", in_file(path));
  }
  size = uint64_t(st.st_size);
  return fd;
}

// The whole content of a regular file of at most `max_bytes` (`limit` names that bound in the
// error, e.g. "kMaxJsonFileBytes").
inline std::string read_regular_file(const std::string& path, uint64_t max_bytes, const char* limit) {
  uint64_t size = 0;
  const int fd = open_regular_file(path, size);
  if (size > max_bytes) {
    ::close(fd);
    throw Error("file of " + format_bytes(double(size)) + " is larger than the " + format_bytes(double(max_bytes)) +
                    " limit (" + limit + ")",
                in_file(path));
  }
  std::string out(size_t(size), '\0');
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t r = ::read(fd, &out[done], out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw Error(std::string("read failed: ") + std::strerror(err), in_file(path));
    }
    if (r == 0) break;  // the file shrank while we read it
    done += size_t(r);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

}  // namespace deepseek
