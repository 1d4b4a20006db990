// bnorm bench — running the Python peers as child processes and finding their scripts.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "bnorm/core/error.hpp"

extern char** environ;

namespace bnorm::cli::bench {

namespace fs = std::filesystem;

std::string choose_python(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("BNORM_PYTHON"); env != nullptr && *env != '\0') return env;
  return "python3";
}

std::string locate_peer_script(const std::string& name) {
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / "share/bnorm/peers" / name);
#ifdef BNORM_SOURCE_DIR
  candidates.push_back(fs::path(BNORM_SOURCE_DIR) / "bench/peers" / name);
#endif
  for (const auto& p : candidates) {
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

std::map<std::string, std::string> python_peer_env(int threads) {
  const std::string t = std::to_string(threads);
  return {
      {"OMP_NUM_THREADS", t},
      {"MKL_NUM_THREADS", t},
      // Keep freed memory in the heap: with glibc's defaults PyTorch's large per-call outputs
      // are mmap'ed and unmapped, and every call then pays for fresh zeroed pages.
      {"GLIBC_TUNABLES", "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"},
      {"PYTHONUNBUFFERED", "1"},
  };
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv,
                           const std::map<std::string, std::string>& env) {
  // A peer that dies must not take us with it when we write to its stdin.
  std::signal(SIGPIPE, SIG_IGN);
  char path_template[] = "/tmp/bnorm-bench-stderr-XXXXXX";
  const int err_fd = mkstemp(path_template);
  if (err_fd < 0) throw IoError(std::string("cannot create a temporary file: ") + strerror(errno));
  stderr_path_ = path_template;

  // Everything the child needs is built before fork: after it only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    if (env.count(key) == 0) env_strings.push_back(entry);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  int to_child[2], from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0) {
    close(err_fd);
    throw IoError(std::string("cannot create a pipe: ") + strerror(errno));
  }
  pid_ = fork();
  if (pid_ < 0) {
    close(err_fd);
    throw IoError(std::string("cannot start a process: ") + strerror(errno));
  }
  if (pid_ == 0) {
    dup2(to_child[0], 0);
    dup2(from_child[1], 1);
    dup2(err_fd, 2);
    execvpe(args[0], args.data(), envp.data());
    const char msg[] = "cannot run the interpreter\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  close(err_fd);
  in_fd_ = to_child[1];
  out_fd_ = from_child[0];
}

ChildProcess::~ChildProcess() {
  wait(nullptr);
  if (!stderr_path_.empty()) unlink(stderr_path_.c_str());
}

bool ChildProcess::write_line(const std::string& line) {
  if (in_fd_ < 0) return false;
  const std::string text = line + "\n";
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(in_fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool ChildProcess::read_line(std::string& line) {
  while (true) {
    const auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return true;
    }
    if (out_fd_ < 0) return false;
    char chunk[4096];
    const ssize_t n = ::read(out_fd_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(out_fd_);
      out_fd_ = -1;
      if (buffer_.empty()) return false;
      line.swap(buffer_);
      buffer_.clear();
      return true;
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

int ChildProcess::wait(rusage* usage) {
  // Closing both pipes first: the child sees end of input, and one still writing gets EPIPE
  // instead of blocking us both.
  if (in_fd_ >= 0) {
    close(in_fd_);
    in_fd_ = -1;
  }
  if (out_fd_ >= 0) {
    close(out_fd_);
    out_fd_ = -1;
  }
  if (!waited_ && pid_ > 0) {
    int status = 0;
    pid_t r;
    do {
      r = wait4(pid_, &status, 0, &usage_);
    } while (r < 0 && errno == EINTR);
    waited_ = true;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  if (usage != nullptr) *usage = usage_;
  return status_;
}

std::string ChildProcess::stderr_tail() const {
  std::ifstream in(stderr_path_);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  }
  if (last.size() > 300) last = last.substr(0, 300) + "...";
  return last;
}

TorchServePeer::TorchServePeer(const std::string& python, const std::string& script_name,
                               const std::vector<int>& threads) {
  const std::string script = locate_peer_script(script_name);
  if (script.empty()) {
    unavailable_ = "PyTorch: peer script bench/peers/" + script_name + " not found";
    return;
  }
  for (int t : threads) {
    auto proc = std::make_unique<ChildProcess>(
        std::vector<std::string>{python, script, "--serve", "--threads", std::to_string(t)},
        python_peer_env(t));
    std::string line;
    nlohmann::json ready;
    if (proc->read_line(line)) ready = nlohmann::json::parse(line, nullptr, false);
    if (!ready.is_object() || !ready.value("ready", false)) {
      proc->wait();
      unavailable_ = "PyTorch: not installed (" + python + ")";
      if (ready.is_object() && ready.contains("error")) {
        unavailable_ += ": " + ready["error"].get<std::string>();
      } else if (const std::string tail = proc->stderr_tail(); !tail.empty()) {
        unavailable_ += ": " + tail;
      }
      processes_.clear();
      return;
    }
    version_ = ready.value("torch", "?");
    processes_[t] = std::move(proc);
  }
}

TorchServePeer::~TorchServePeer() = default;

bool TorchServePeer::ask(int threads, const nlohmann::json& request, nlohmann::json& reply,
                         std::string& error) {
  auto it = processes_.find(threads);
  if (it == processes_.end()) {
    error = "PyTorch: process ended earlier";
    return false;
  }
  ChildProcess& proc = *it->second;
  std::string line;
  if (!proc.write_line(request.dump()) || !proc.read_line(line)) {
    proc.wait();
    error = "PyTorch: the peer process ended: " + proc.stderr_tail();
    processes_.erase(it);
    return false;
  }
  reply = nlohmann::json::parse(line, nullptr, false);
  if (!reply.is_object()) {
    error = "PyTorch: unreadable reply '" + line + "'";
    return false;
  }
  if (reply.contains("error")) {
    error = "PyTorch: " + reply["error"].get<std::string>();
    return false;
  }
  return true;
}

PeerResult TorchServePeer::time_request(int threads, const nlohmann::json& request) {
  nlohmann::json reply;
  std::string error;
  if (!ask(threads, request, reply, error)) return {false, 0.0, error};
  if (reply.contains("us") && reply["us"].is_number()) {
    return {true, reply["us"].get<double>() * 1e-6, ""};
  }
  return {false, 0.0, "PyTorch: unreadable reply '" + reply.dump() + "'"};
}

}  // namespace bnorm::cli::bench
