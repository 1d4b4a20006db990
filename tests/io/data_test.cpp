// The user's data: .npy/.npz files written by real NumPy (tests/io/data/make_data_fixtures.py,
// values in values.json), malformed files built here, CSV text, and the data set loaders.
#include "bnorm/io/data.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnorm/core/error.hpp"
#include "io/test_files.hpp"
#include "io/zip.hpp"

namespace {

using namespace bnorm;
using namespace bnorm::io;
using bnorm::testing::bytes_of;
using bnorm::testing::expect_io_error;
using bnorm::testing::read_bytes;
using bnorm::testing::TempDir;
using bnorm::testing::write_bytes;

const std::string kDir = std::string(BNORM_SOURCE_DIR) + "/tests/io/data/";

const nlohmann::json& golden() {
  static const nlohmann::json j = nlohmann::json::parse(read_bytes(kDir + "values.json"));
  return j;
}

// Element i by the array's own type, as a long double (exact for every fixture value).
long double element(const NpyArray& a, std::int64_t i) {
  const unsigned char* base = a.data.data();
  auto get = [&](auto v) {
    std::memcpy(&v, base + i * static_cast<std::int64_t>(sizeof v), sizeof v);
    return static_cast<long double>(v);
  };
  switch (a.type) {
    case NpyType::float32:
      return get(float{});
    case NpyType::float64:
      return get(double{});
    case NpyType::uint8:
      return get(std::uint8_t{});
    case NpyType::int8:
      return get(std::int8_t{});
    case NpyType::int16:
      return get(std::int16_t{});
    case NpyType::int32:
      return get(std::int32_t{});
    case NpyType::int64:
      return get(std::int64_t{});
    case NpyType::uint16:
      return get(std::uint16_t{});
    case NpyType::uint32:
      return get(std::uint32_t{});
    case NpyType::uint64:
      return get(std::uint64_t{});
    case NpyType::bool_:
      return get(std::uint8_t{});
  }
  return 0;
}

void expect_matches(const NpyArray& a, const nlohmann::json& rec, const std::string& name) {
  EXPECT_EQ(std::string(npy_type_name(a.type)), rec["dtype"].get<std::string>()) << name;
  EXPECT_EQ(a.shape, rec["shape"].get<std::vector<std::int64_t>>()) << name;
  const auto& values = rec["values"];
  ASSERT_EQ(static_cast<std::size_t>(a.size()), values.size()) << name;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const long double expected =
        values[i].is_number_float()      ? static_cast<long double>(values[i].get<double>())
        : values[i].is_number_unsigned() ? static_cast<long double>(values[i].get<std::uint64_t>())
                                         : static_cast<long double>(values[i].get<std::int64_t>());
    EXPECT_EQ(element(a, static_cast<std::int64_t>(i)), expected) << name << " element " << i;
  }
}

// --- .npy from NumPy ------------------------------------------------------------------------

TEST(Npy, EveryGoldenFileMatchesNumPy) {
  int files = 0, fortran = 0;
  for (const auto& [name, rec] : golden()["arrays"].items()) {
    if (name.rfind("dataset.", 0) == 0) continue;
    const NpyArray a = read_npy_array(kDir + name);
    expect_matches(a, rec, name);
    ++files;
    fortran += rec["fortran"].get<bool>() ? 1 : 0;
  }
  EXPECT_EQ(files, 20);
  EXPECT_EQ(fortran, 2);  // fortran_f4 and fortran_i2 really are Fortran-ordered files
}

TEST(Npy, FeaturesConvertEveryTypeToFloat32) {
  for (const std::string name : {"f8.npy", "i2.npy", "u4.npy", "b1.npy", "big_f8.npy"}) {
    const NpyArray a = read_npy_array(kDir + name);
    const Tensor t = npy_features(a, name);
    EXPECT_EQ(t.shape().dims(), a.shape);
    for (std::int64_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(t[i], static_cast<float>(element(a, i))) << name << " " << i;
    }
  }
}

TEST(Npy, Uint8RescaleMatchesTheIdxLoader) {
  const NpyArray a = read_npy_array(kDir + "u1.npy");
  const Tensor raw = npy_features(a, "u1", Rescale::none);
  const Tensor unit = npy_features(a, "u1", Rescale::uint8_unit);
  for (std::int64_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(raw[i], static_cast<float>(a.data[static_cast<std::size_t>(i)]));
    EXPECT_EQ(unit[i], static_cast<float>(a.data[static_cast<std::size_t>(i)]) / 255.0f);
  }
  // Other types are never rescaled.
  const NpyArray i2 = read_npy_array(kDir + "i2.npy");
  EXPECT_EQ(npy_features(i2, "i2", Rescale::uint8_unit)[4], 32767.0f);
}

TEST(Npy, FeaturesNeedATensorRank) {
  expect_io_error([] { (void)read_npy(kDir + "scalar.npy"); }, "shape () cannot be features");
}

TEST(Npy, Labels) {
  EXPECT_EQ(npy_labels(read_npy_array(kDir + "u2.npy"), "y"),
            (std::vector<std::int64_t>{0, 1, 65535}));
  EXPECT_EQ(npy_labels(read_npy_array(kDir + "u8.npy"), "y"),
            (std::vector<std::int64_t>{0, 3, std::int64_t{1} << 40}));
  expect_io_error([] { (void)npy_labels(read_npy_array(kDir + "i8.npy"), "y"); },
                  "y: label -1099511627776 at index 0 is negative");
  expect_io_error([] { (void)npy_labels(read_npy_array(kDir + "f4.npy"), "y"); },
                  "labels must have shape (n,) or (n, 1); received (2, 3)");
  expect_io_error([] { (void)npy_labels(read_npy_array(kDir + "big_f8.npy"), "y"); },
                  "at index 0 is not a whole number");
}

TEST(Npy, WriterMatchesNumPyByteForByte) {
  // NumPy's own bytes for a (2, 3) and a (2, 2) float32 array, header padding included.
  for (const std::string name : {"f4.npy", "v2.npy"}) {
    const Tensor t = read_npy(kDir + name);
    if (name == "f4.npy") {
      EXPECT_EQ(npy_bytes(t), read_bytes(kDir + name));
    }
    const NpyArray back = read_npy_bytes(bytes_of(npy_bytes(t)), "back: ");
    EXPECT_EQ(back.shape, t.shape().dims());
    EXPECT_EQ(std::memcmp(back.data.data(), t.data(), back.data.size()), 0);
  }
  // Rank 1 is written "(5,)", as Python writes a 1-tuple.
  const Tensor v{Shape{5}, std::vector<float>{1, 2, 3, 4, 5}};
  EXPECT_NE(npy_bytes(v).find("'shape': (5,), }"), std::string::npos);
  EXPECT_EQ(npy_bytes(v).find('\n'), 127u);  // header ends on a 64-byte boundary
}

TEST(Npy, WriteIsAtomicAndReportsFailure) {
  TempDir dir;
  const Tensor t{Shape{2, 2}, std::vector<float>{1, -2, 3.5f, 4}};
  write_npy(dir.file("out.npy"), t);
  const Tensor back = read_npy(dir.file("out.npy"));
  EXPECT_EQ(back.shape(), t.shape());
  EXPECT_EQ(std::vector<float>(back.values().begin(), back.values().end()),
            std::vector<float>(t.values().begin(), t.values().end()));
  EXPECT_THROW(write_npy(dir.file("missing/out.npy"), t), IoError);
  EXPECT_EQ(std::filesystem::directory_iterator(dir.path())->path().filename(), "out.npy");
}

// --- malformed .npy built here ---------------------------------------------------------------

// A .npy file with the given header dict text (format 1.0) and payload.
std::string npy_with(const std::string& dict, const std::string& payload) {
  std::string header = dict + "\n";
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  return out + header + payload;
}

const std::string kGoodDict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
const std::string kPayload(16, '\0');

TEST(NpyHostile, ValidBaseline) {
  EXPECT_EQ(read_npy_bytes(bytes_of(npy_with(kGoodDict, kPayload)), "x: ").size(), 4);
}

// Fuzzing regression: an array with no elements (shape (0, 3)) once passed a null pointer to
// memcpy (undefined behaviour that UBSan reports).
TEST(Npy, EmptyArray) {
  const NpyArray a = read_npy_array(kDir + "empty.npy");
  EXPECT_TRUE(a.data.empty());
  EXPECT_EQ(npy_features(a, "empty").shape(), (Shape{0, 3}));
  const std::string fortran =
      npy_with("{'descr': '<f4', 'fortran_order': True, 'shape': (0, 3), }", "");
  EXPECT_EQ(read_npy_bytes(bytes_of(fortran), "x: ").size(), 0);
}

TEST(NpyHostile, EveryTruncationIsRefused) {
  const std::string good = read_bytes(kDir + "fortran_f4.npy");
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW((void)read_npy_bytes(bytes_of(good.substr(0, n)), "cut: "), IoError) << n;
  }
}

TEST(NpyHostile, HeaderLiesAboutShape) {
  expect_io_error(
      [] {
        (void)read_npy_bytes(
            bytes_of(
                npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", kPayload)),
            "x.npy: ");
      },
      "x.npy: shape (3, 2) of float32 needs 24 bytes of data but 16 follow the header "
      "(truncated file?)");
  expect_io_error(
      [] {
        (void)read_npy_bytes(
            bytes_of(
                npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", kPayload)),
            "x: ");
      },
      "(trailing bytes)");
}

TEST(NpyHostile, HugeShapesRefusedBeforeAllocation) {
  // 2^40 x 2^40 overflows 64 bits; 2^31 x 2^30 float32 (8 EiB) does not, but is not in the file.
  expect_io_error(
      [] {
        (void)read_npy_bytes(
            bytes_of(npy_with("{'descr': '<f8', 'fortran_order': True, 'shape': (1099511627776, "
                              "1099511627776), }",
                              kPayload)),
            "x: ");
      },
      "overflows 64 bits");
  expect_io_error(
      [] {
        (void)read_npy_bytes(
            bytes_of(npy_with(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 1073741824), }",
                kPayload)),
            "x: ");
      },
      "needs 9223372036854775808 bytes");
}

TEST(NpyHostile, BadDicts) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{'descr': '<f4', 'fortran_order': False, }", "missing key 'shape'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", "unknown key 'x'"},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}",
       "'descr' appears twice"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,)}", "structured dtypes"},
      {"{'descr': '<c8', 'fortran_order': False, 'shape': (2,)}", "dtype '<c8' is not supported"},
      {"{'descr': '|f4', 'fortran_order': False, 'shape': (4,)}", "dtype '|f4' is not supported"},
      {"{'descr': 'O', 'fortran_order': False, 'shape': (4,)}", "dtype 'O' is not supported"},
      {"{'descr': '<f4', 'fortran_order': maybe, 'shape': (4,)}", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4)}", "must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", "integers >= 0"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,)} x", "text after the dict"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,4)}", "rank above 8"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
       "does not fit 64 bits"},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (4,)}", "expected ','"},
      {"['descr', '<f4']", "expected '{'"},
      {"{'descr': '<f4\\x00', 'fortran_order': False, 'shape': (4,)}", "escapes"},
      {"{'descr: '<f4', 'fortran_order': False, 'shape': (4,)}", "expected ':'"},
  };
  for (const auto& [dict, needle] : cases) {
    expect_io_error([&] { (void)read_npy_bytes(bytes_of(npy_with(dict, kPayload)), "x: "); },
                    needle);
  }
}

TEST(NpyHostile, BadPreambles) {
  expect_io_error([] { (void)read_npy_bytes(bytes_of(std::string("PK\x03\x04 not npy")), "x: "); },
                  "not a .npy file");
  std::string v4 = npy_with(kGoodDict, kPayload);
  v4[6] = 4;
  expect_io_error([&] { (void)read_npy_bytes(bytes_of(v4), "x: "); },
                  "format version 4.0 is not supported");
  std::string long_header = npy_with(kGoodDict, kPayload);
  long_header[8] = '\xff';
  long_header[9] = '\xff';
  expect_io_error([&] { (void)read_npy_bytes(bytes_of(long_header), "x: "); },
                  "truncated .npy header");
}

TEST(NpyHostile, FileThatIsNotRegularIsRefused) {
  TempDir dir;
  expect_io_error([&] { (void)read_npy_array(dir.path().string()); }, dir.path().string());
  expect_io_error([&] { (void)read_npy_array(dir.file("none.npy")); }, "none.npy");
}

// --- .npz -----------------------------------------------------------------------------------

void expect_dataset_arrays(const std::map<std::string, NpyArray>& arrays) {
  for (const std::string key : {"x_train", "y_train", "x_test", "y_test"}) {
    ASSERT_TRUE(arrays.count(key)) << key;
    expect_matches(arrays.at(key), golden()["arrays"]["dataset." + key], key);
  }
}

TEST(Npz, SavezAndSavezCompressed) {
  const auto stored = read_npz(kDir + "dataset.npz");
  EXPECT_EQ(stored.size(), 4u);
  expect_dataset_arrays(stored);
  expect_dataset_arrays(read_npz(kDir + "dataset_compressed.npz"));
}

TEST(Npz, WantedArraysOnly) {
  EXPECT_EQ(read_npz(kDir + "dataset_float.npz").size(), 5u);  // class_names too
  const auto some = read_npz(kDir + "dataset_float.npz", {"x_test", "nothing"});
  ASSERT_EQ(some.size(), 1u);
  EXPECT_EQ(some.begin()->first, "x_test");
}

TEST(Npz, HostileArchives) {
  using detail::zip_archive;
  const std::string good = npy_with(kGoodDict, kPayload);
  expect_io_error(
      [&] {
        (void)read_npz_bytes(bytes_of(zip_archive({{"notes.txt", "hi"}})), "z: ");
      },
      "member 'notes.txt' is not a .npy array");
  expect_io_error(
      [&] {
        (void)read_npz_bytes(bytes_of(zip_archive({{"x.npy", good.substr(0, 70)}})), "z.npz: ");
      },
      "z.npz: array 'x': ");
  expect_io_error([&] { (void)read_npz_bytes(bytes_of(good), "z.npz: "); },
                  "z.npz: not a zip archive");
  // A bomb: 80 MiB of zeros claimed as 3 GiB (central and local headers) is refused from the
  // directory, before anything is inflated.
  std::string bomb = zip_archive({{"x.npy", std::string(std::size_t{80} << 20, '\0')}}, true);
  for (const auto& [sig, usize_at] :
       {std::pair<std::string, std::size_t>{"PK\x01\x02", 24}, {"PK\x03\x04", 22}}) {
    for (std::size_t p = bomb.find(sig); p != std::string::npos; p = bomb.find(sig, p + 1)) {
      bomb[p + usize_at + 3] = '\xc0';
    }
  }
  expect_io_error([&] { (void)read_npz_bytes(bytes_of(bomb), "z: "); }, "zip bomb");
}

// --- data sets ------------------------------------------------------------------------------

TEST(Dataset, FromNpz) {
  const auto& g = golden()["arrays"];
  for (const std::string file : {"dataset.npz", "dataset_compressed.npz"}) {
    const Dataset d = load_npz_dataset(kDir + file);
    EXPECT_EQ(d.train_x.shape(), (Shape{6, 4, 4}));
    EXPECT_EQ(d.test_x.shape(), (Shape{3, 4, 4}));
    EXPECT_EQ(d.train_y.shape(), (Shape{6}));
    const auto x = g["dataset.x_train"]["values"];
    for (std::int64_t i = 0; i < d.train_x.size(); ++i) {
      EXPECT_EQ(d.train_x[i],
                static_cast<float>(x[static_cast<std::size_t>(i)].get<int>()) / 255.0f);
    }
    const auto y = g["dataset.y_test"]["values"];
    for (std::int64_t i = 0; i < 3; ++i) {
      EXPECT_EQ(d.test_y[i], static_cast<float>(y[static_cast<std::size_t>(i)].get<int>()));
    }
    EXPECT_EQ(count_classes(d), 3);
  }
  const Dataset raw = load_npz_dataset(kDir + "dataset.npz", Rescale::none);
  EXPECT_EQ(raw.train_x[0], static_cast<float>(g["dataset.x_train"]["values"][0].get<int>()));
}

TEST(Dataset, FromNpzWithFloatsAndColumnLabels) {
  const Dataset d = load_npz_dataset(kDir + "dataset_float.npz");
  EXPECT_EQ(d.train_y.shape(), (Shape{6}));
  EXPECT_EQ(d.test_y.shape(), (Shape{3}));
  const int first = golden()["arrays"]["dataset.x_train"]["values"][0].get<int>();
  EXPECT_EQ(d.train_x[0], static_cast<float>(first) / 10.0f);  // float32 is never rescaled
}

TEST(Dataset, NpzProblems) {
  TempDir dir;
  using detail::zip_archive;
  auto npy = [](const Tensor& t) { return npy_bytes(t); };
  const Tensor x{Shape{2, 3}}, y{Shape{2}}, y3{Shape{3}}, x4{Shape{2, 4}};
  write_bytes(dir.file("missing.npz"), zip_archive({{"x_train.npy", npy(x)}}));
  expect_io_error([&] { (void)load_npz_dataset(dir.file("missing.npz")); }, "no array 'y_train'");
  write_bytes(dir.file("count.npz"), zip_archive({{"x_train.npy", npy(x)},
                                                  {"y_train.npy", npy(y3)},
                                                  {"x_test.npy", npy(x)},
                                                  {"y_test.npy", npy(y)}}));
  expect_io_error([&] { (void)load_npz_dataset(dir.file("count.npz")); },
                  "x_train holds 2 samples but y_train holds 3 labels");
  write_bytes(dir.file("shape.npz"), zip_archive({{"x_train.npy", npy(x)},
                                                  {"y_train.npy", npy(y)},
                                                  {"x_test.npy", npy(x4)},
                                                  {"y_test.npy", npy(y)}}));
  expect_io_error([&] { (void)load_npz_dataset(dir.file("shape.npz")); },
                  "training samples have shape (3,) but test samples have shape (4,)");
  Tensor bad_y{Shape{2}, std::vector<float>{1.0f, 0.5f}};
  write_bytes(dir.file("label.npz"), zip_archive({{"x_train.npy", npy(x)},
                                                  {"y_train.npy", npy(bad_y)},
                                                  {"x_test.npy", npy(x)},
                                                  {"y_test.npy", npy(y)}}));
  expect_io_error([&] { (void)load_npz_dataset(dir.file("label.npz")); },
                  "y_train: label 0.5 at index 1 is not a whole number");
}

TEST(Dataset, ClassLabelCheckNamesIndexAndValue) {
  const Tensor y{Shape{4}, std::vector<float>{0, 9, 12, 3}};
  EXPECT_NO_THROW(check_class_labels(y, 13, "y_train"));
  expect_io_error([&] { check_class_labels(y, 10, "y_train of d.npz"); },
                  "y_train of d.npz: label 12 at index 2 is outside the model's 10 classes (0..9)");
}

// --- CSV ------------------------------------------------------------------------------------

TEST(Csv, LabelByNameAndDefaultLast) {
  const std::string text = "a,label,b\n1,0,2.5\n-3e2, 2 ,+4\n";
  const CsvData byname = read_csv_text(text, "label", "t.csv: ");
  EXPECT_EQ(byname.label_column, "label");
  EXPECT_EQ(byname.labels, (std::vector<std::int64_t>{0, 2}));
  EXPECT_EQ(byname.features.shape(), (Shape{2, 2}));
  EXPECT_EQ(std::vector<float>(byname.features.values().begin(), byname.features.values().end()),
            (std::vector<float>{1.0f, 2.5f, -300.0f, 4.0f}));
  const CsvData last = read_csv_text("a,b,y\n1,0,2\n", "", "t.csv: ");
  EXPECT_EQ(last.label_column, "y");
  EXPECT_EQ(last.labels, (std::vector<std::int64_t>{2}));
}

TEST(Csv, QuotesCrlfBlankLinesAndBom) {
  const std::string text =
      "\xEF\xBB\xBF\"x, first\",\"say \"\"hi\"\"\",class\r\n\r\n\"1.5\",2,1\r\n\n3,\"4\",0.0\r\n";
  const CsvData d = read_csv_text(text, "class", "t.csv: ");
  EXPECT_EQ(d.columns, (std::vector<std::string>{"x, first", "say \"hi\"", "class"}));
  EXPECT_EQ(d.labels, (std::vector<std::int64_t>{1, 0}));
  EXPECT_EQ(d.features[0], 1.5f);
  EXPECT_EQ(d.features[3], 4.0f);
}

TEST(Csv, ErrorsNameLineAndColumn) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"", "", "t.csv: the file is empty (no header row)"},
      {"\n\n", "", "the file is empty"},
      {"a,b\n", "", "no data rows after the header"},
      {"a\n1\n", "", "at least one feature column"},
      {"a,b\n1,2\n3,x7\n", "", "t.csv: line 3: column 'b': 'x7' is not a number"},
      {"a,b\n1,2\n\n4,5,6\n", "", "line 4: has 3 fields; the header has 2"},
      {"a,b\n1\n", "", "line 2: has 1 field; the header has 2"},
      {"a,b\n1,\n", "", "line 2: column 'b' is empty"},
      {"a,b\nnan,1\n", "", "column 'a': 'nan' is not a finite number"},
      {"a,b\n1e999,1\n", "", "out of range"},
      {"a,b\n1,2.5\n", "", "line 2: label column 'b': '2.5' is not a class index"},
      {"a,b\n1,-1\n", "", "'-1' is not a class index"},
      {"a,b\n1,2\n", "c", "no column named 'c' in the header (a, b)"},
      {"a,b,a\n1,2,3\n", "a", "the label column 'a' appears twice"},
      {"a,b\n\"1,2\n", "", "line 2: a quoted field is not closed"},
      {"a,b\n1\"2,3\n", "", "line 2: a quote inside an unquoted field"},
      {"a,b\n\"1\"x,3\n", "", "text after the closing quote"},
  };
  for (const auto& [text, label, needle] : cases) {
    expect_io_error([&] { (void)read_csv_text(text, label, "t.csv: "); }, needle);
  }
}

TEST(Csv, LinesCountThroughQuotedNewlines) {
  expect_io_error([] { (void)read_csv_text("\"a\nb\",c\n1,2\n3,z\n", "", "t: "); },
                  "line 4: column 'c': 'z'");
}

TEST(Csv, DatasetFromTwoFiles) {
  TempDir dir;
  write_bytes(dir.file("train.csv"), "f1,f2,y\n1,2,0\n3,4,1\n5,6,4\n");
  write_bytes(dir.file("test.csv"), "f1,f2,y\n7,8,1\n");
  const Dataset d = load_csv_dataset(dir.file("train.csv"), dir.file("test.csv"), "y");
  EXPECT_EQ(d.train_x.shape(), (Shape{3, 2}));
  EXPECT_EQ(d.test_x.shape(), (Shape{1, 2}));
  EXPECT_EQ(d.train_y[2], 4.0f);
  EXPECT_EQ(count_classes(d), 5);
  write_bytes(dir.file("other.csv"), "f2,f1,y\n7,8,1\n");
  expect_io_error(
      [&] { (void)load_csv_dataset(dir.file("train.csv"), dir.file("other.csv"), "y"); },
      "the header differs from the training file");
}

}  // namespace
