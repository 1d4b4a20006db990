// Numeric CSV (RFC 4180, the minimal part): a header row of column names, then rows of numbers.
// One pass over the text; each field is converted as soon as it is complete, so the file is held
// once as text and once as float32 values.
#include <charconv>
#include <cmath>
#include <limits>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"
#include "io/files.hpp"

namespace bnorm::io {

namespace {

// Text files of numbers larger than this are not what CSV is for (use .npy/.npz).
constexpr std::uint64_t kMaxCsvBytes = std::uint64_t{8} << 30;

// A field as shown in an error: at most 40 characters, control characters as '?'.
std::string shown(std::string_view field) {
  std::string s(field.substr(0, 40));
  for (auto& c : s) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  return "'" + s + (field.size() > 40 ? "...'" : "'");
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Splits CSV text into records of fields. next() fills `fields` with the next record (false at
// the end of the text); line() is the 1-based line the record started on.
class CsvScanner {
 public:
  CsvScanner(std::string_view text, const std::string& context) : s_(text), context_(context) {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") s_.remove_prefix(3);  // UTF-8 byte-order mark
  }

  bool next(std::vector<std::string>& fields) {
    for (;;) {
      if (pos_ >= s_.size()) return false;
      record_line_ = line_;
      fields.clear();
      bool quoted_any = false;
      for (;;) {
        std::string field;
        if (pos_ < s_.size() && s_[pos_] == '"') {
          quoted_any = true;
          ++pos_;
          for (;;) {
            if (pos_ >= s_.size()) fail(record_line_, "a quoted field is not closed");
            const char c = s_[pos_++];
            if (c == '"') {
              if (pos_ < s_.size() && s_[pos_] == '"') {
                field += '"';
                ++pos_;
              } else {
                break;
              }
            } else {
              if (c == '\n') ++line_;
              field += c;
            }
          }
          while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t')) ++pos_;
          if (pos_ < s_.size() && s_[pos_] != ',' && s_[pos_] != '\n' && s_[pos_] != '\r') {
            fail(line_, "text after the closing quote of a field");
          }
        } else {
          const std::size_t start = pos_;
          while (pos_ < s_.size() && s_[pos_] != ',' && s_[pos_] != '\n' && s_[pos_] != '\r') {
            if (s_[pos_] == '"') fail(line_, "a quote inside an unquoted field");
            ++pos_;
          }
          field.assign(s_.substr(start, pos_ - start));
        }
        fields.push_back(std::move(field));
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        // End of the record: CRLF, LF, a lone CR, or the end of the text.
        if (pos_ < s_.size() && s_[pos_] == '\r') ++pos_;
        if (pos_ < s_.size() && s_[pos_] == '\n') ++pos_;
        ++line_;
        break;
      }
      // A blank line is one empty unquoted field: skipped.
      if (fields.size() == 1 && !quoted_any && trim(fields[0]).empty()) continue;
      return true;
    }
  }

  std::size_t line() const { return record_line_; }

  [[noreturn]] void fail(std::size_t line, const std::string& problem) const {
    throw IoError(context_ + "line " + std::to_string(line) + ": " + problem);
  }

 private:
  std::string_view s_;
  const std::string& context_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
  std::size_t record_line_ = 1;
};

}  // namespace

CsvData read_csv_text(std::string_view text, const std::string& label_column,
                      const std::string& context) {
  CsvScanner scanner(text, context);
  CsvData out;
  std::vector<std::string> fields;
  if (!scanner.next(fields)) throw IoError(context + "the file is empty (no header row)");
  for (const auto& f : fields) out.columns.emplace_back(trim(f));
  const std::size_t columns = out.columns.size();
  if (columns < 2) {
    throw IoError(context + "the header has " + std::to_string(columns) +
                  " column; at least one feature column and one label column are needed");
  }
  std::size_t label = columns - 1;
  if (!label_column.empty()) {
    label = columns;
    for (std::size_t c = 0; c < columns; ++c) {
      if (out.columns[c] != label_column) continue;
      if (label != columns) {
        throw IoError(context + "the label column '" + label_column +
                      "' appears twice in the header");
      }
      label = c;
    }
    if (label == columns) {
      std::string names;
      for (std::size_t c = 0; c < columns && c < 20; ++c) names += (c ? ", " : "") + out.columns[c];
      throw IoError(context + "no column named '" + label_column + "' in the header (" + names +
                    (columns > 20 ? ", ..." : "") + ")");
    }
  }
  out.label_column = out.columns[label];

  std::vector<float> values;
  while (scanner.next(fields)) {
    const std::size_t line = scanner.line();
    if (fields.size() != columns) {
      scanner.fail(line, "has " + std::to_string(fields.size()) + " field" +
                             (fields.size() == 1 ? "" : "s") + "; the header has " +
                             std::to_string(columns));
    }
    for (std::size_t c = 0; c < columns; ++c) {
      const std::string_view field = trim(fields[c]);
      const std::string where = "column '" + out.columns[c] + "'";
      if (field.empty()) scanner.fail(line, where + " is empty (a number is needed)");
      std::string_view digits = field;
      if (digits.front() == '+') digits.remove_prefix(1);
      double v = 0.0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec == std::errc::result_out_of_range) {
        scanner.fail(line, where + ": " + shown(field) + " is out of range for a number");
      }
      if (ec != std::errc() || end != digits.data() + digits.size()) {
        scanner.fail(line, where + ": " + shown(field) + " is not a number");
      }
      if (!std::isfinite(v)) {
        scanner.fail(line, where + ": " + shown(field) + " is not a finite number");
      }
      if (c == label) {
        if (v != std::floor(v) || v < 0.0 || v > 9.0e18) {
          scanner.fail(line, "label " + where + ": " + shown(field) +
                                 " is not a class index (a whole number >= 0)");
        }
        out.labels.push_back(static_cast<std::int64_t>(v));
      } else {
        values.push_back(static_cast<float>(v));
      }
    }
  }
  if (out.labels.empty()) throw IoError(context + "no data rows after the header");
  const auto rows = static_cast<std::int64_t>(out.labels.size());
  out.features = Tensor(Shape{rows, static_cast<std::int64_t>(columns - 1)}, values);
  return out;
}

CsvData read_csv(const std::string& path, const std::string& label_column) {
  const std::string context = "'" + path + "': ";
  const std::vector<unsigned char> bytes = detail::read_file(path, context, kMaxCsvBytes);
  return read_csv_text(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                       label_column, context);
}

}  // namespace bnorm::io
