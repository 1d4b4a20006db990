// Whole-file reads and atomic writes shared by every file format (native, Keras, data).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace bnorm::io::detail {

// Reads a regular file whole. A FIFO, device or directory is refused before it is read (the
// open is non-blocking, so a FIFO without a writer cannot hang), and a file larger than
// `max_bytes` is refused before anything is allocated. Errors: IoError "<context>problem".
std::vector<unsigned char> read_file(const std::string& path, const std::string& context,
                                     std::uint64_t max_bytes = std::uint64_t{1} << 40);

// Atomic replacement: writes "<path>.tmp-<pid>", fsyncs, renames over `path`, fsyncs the
// directory. On any failure the temporary file is removed, any previous file at `path` is left
// untouched, and IoError "<context>cannot save (...)" is thrown. Temporary files of `path` that
// killed saves left behind are removed first (remove_stale_temporaries).
void write_file_atomic(const std::string& path, const std::string& bytes,
                       const std::string& context);

// Removes the files "<path>.tmp-<pid>" beside `path` whose process no longer exists on this
// machine: what a save killed between creating its temporary file and renaming it leaves. A
// temporary file of a live process (another save in progress) is kept. Best effort, no errors.
void remove_stale_temporaries(const std::string& path);

// strerror as a std::string.
std::string errno_text(int err);

}  // namespace bnorm::io::detail
