#include "io/files.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "bnorm/core/error.hpp"

namespace bnorm::io::detail {

std::string errno_text(int err) { return std::strerror(err); }

namespace {

// Writes every byte; returns 0 or the errno of the failure.
int write_all(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

}  // namespace

void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".tmp-";
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const auto pid = static_cast<pid_t>(std::stol(digits));
    // A live process (or one we may not signal: EPERM) may be writing it: leave it alone.
    if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    fs::remove(it->path(), ignored);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes,
                       const std::string& context) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw IoError(context + "cannot save: the path is a directory");
  }
  remove_stale_temporaries(path);
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw IoError(context + "cannot create temporary file '" + tmp + "' (" + errno_text(errno) +
                  ")");
  }
  // Each step runs only if the previous ones succeeded; the first failure names itself.
  const char* failed = nullptr;
  int err = write_all(fd, bytes);
  if (err) failed = "write";
  if (!failed && ::fsync(fd) != 0) {
    err = errno;
    failed = "flush";
  }
  if (::close(fd) != 0 && !failed) {
    err = errno;
    failed = "close";
  }
  if (!failed && ::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    failed = "rename";
  }
  if (failed) {
    ::unlink(tmp.c_str());
    throw IoError(context + "cannot save (" + failed + " failed: " + errno_text(err) +
                  "); any previous file is unchanged");
  }
  // Make the rename itself durable (best effort: some file systems refuse fsync on directories).
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

std::vector<unsigned char> read_file(const std::string& path, const std::string& context,
                                     std::uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting forever; the
  // S_ISREG check below then refuses it. Regular files ignore the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw IoError(context + "cannot open (" + errno_text(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(context + "not a regular file");
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    throw IoError(context + "too large (" + std::to_string(st.st_size) + " bytes; the limit is " +
                  std::to_string(max_bytes) + ")");
  }
  std::vector<unsigned char> bytes(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw IoError(context + "read failed (" + errno_text(err) + ")");
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  bytes.resize(done);
  return bytes;
}

}  // namespace bnorm::io::detail
