// Tensor and Shape: storage, alignment, rank limits, copies, views, errors.
#include "bnorm/core/tensor.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"

namespace bnorm {
namespace {

bool aligned64(const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

TEST(ShapeTest, RankSizeAndStr) {
  const Shape s{32, 28, 28};
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s.size(), 32 * 28 * 28);
  EXPECT_EQ(s.str(), "(32, 28, 28)");
  EXPECT_EQ(Shape{5}.str(), "(5,)");  // Python tuple spelling, as Keras prints shapes
  EXPECT_EQ(Shape{}.size(), 1);
  EXPECT_EQ(Shape({3, 0, 2}).size(), 0);
}

TEST(ShapeTest, NegativeDimsAreRejected) {
  EXPECT_THROW(Shape({2, -1}), ShapeError);
  EXPECT_THROW(Shape(std::vector<std::int64_t>{-3}), ShapeError);
  EXPECT_THROW(Tensor(Shape{4, -2}), ShapeError);
}

TEST(ShapeTest, NormalizeAxis) {
  const Shape s{2, 3, 4, 5};
  EXPECT_EQ(s.normalize_axis(0, "axis"), 0);
  EXPECT_EQ(s.normalize_axis(3, "axis"), 3);
  EXPECT_EQ(s.normalize_axis(-1, "axis"), 3);
  EXPECT_EQ(s.normalize_axis(-4, "axis"), 0);
  EXPECT_THROW(s.normalize_axis(4, "axis"), ShapeError);
  EXPECT_THROW(s.normalize_axis(-5, "axis"), ShapeError);
  try {
    s.normalize_axis(7, "BatchNormalization 'bn': axis");
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("BatchNormalization 'bn': axis"), std::string::npos) << msg;
    EXPECT_NE(msg.find('7'), std::string::npos) << msg;
  }
}

TEST(ShapeTest, DimByKerasIndex) {
  const Shape s{2, 3, 4};
  EXPECT_EQ(s.dim(0), 2);
  EXPECT_EQ(s.dim(-1), 4);
  EXPECT_EQ(s.dim(-3), 2);
  EXPECT_THROW(s.dim(3), ShapeError);
  EXPECT_THROW(s.dim(-4), ShapeError);
}

TEST(TensorTest, ZeroInitializedAndAligned) {
  for (std::int64_t n : {1, 3, 16, 17, 63, 1000, 4097}) {
    Tensor t(Shape{n});
    EXPECT_TRUE(aligned64(t.data())) << "size " << n;
    EXPECT_EQ(t.size(), n);
    for (float v : t.values()) ASSERT_EQ(v, 0.0f);
  }
  Tensor t(Shape{3, 5, 7});
  EXPECT_TRUE(aligned64(t.data()));
  Tensor copy = t;
  EXPECT_TRUE(aligned64(copy.data()));
  t.resize(Shape{100, 3});
  EXPECT_TRUE(aligned64(t.data()));
  Tensor empty(Shape{0, 4});
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.size(), 0);
}

TEST(TensorTest, RankLimits) {
  EXPECT_THROW(Tensor(Shape{}), ShapeError);                  // rank 0
  EXPECT_THROW(Tensor(Shape{1, 1, 1, 1, 1, 1}), ShapeError);  // rank 6
  EXPECT_NO_THROW(Tensor(Shape{1, 2, 1, 2, 1}));              // rank 5
  EXPECT_NO_THROW(Tensor(Shape{7}));                          // rank 1
  Tensor t(Shape{4});
  EXPECT_THROW(t.resize(Shape{}), ShapeError);
  EXPECT_THROW(t.resize(Shape{1, 1, 1, 1, 1, 4}), ShapeError);
}

TEST(TensorTest, BorrowReadsTheCallersMemoryAndCopiesOwnTheirs) {
  std::vector<float> buffer{1, 2, 3, 4, 5, 6, 7};
  const float* unaligned = buffer.data() + 1;  // any alignment is allowed
  const Tensor view = Tensor::borrow(Shape{2, 3}, unaligned);
  EXPECT_TRUE(view.borrowed());
  EXPECT_EQ(view.data(), unaligned) << "no copy";
  EXPECT_EQ(view.shape(), (Shape{2, 3}));
  buffer[1] = 10.0f;
  EXPECT_EQ(view[0], 10.0f) << "reads the caller's current values";
  Tensor copy = view;
  EXPECT_FALSE(copy.borrowed());
  EXPECT_NE(copy.data(), unaligned);
  EXPECT_EQ(copy[0], 10.0f);
  Tensor resized = Tensor::borrow(Shape{6}, unaligned);
  resized.resize(Shape{3});  // another shape: storage of its own, the caller's is untouched
  EXPECT_FALSE(resized.borrowed());
  resized.fill(0.0f);
  EXPECT_EQ(buffer[1], 10.0f);
  Tensor moved = Tensor::borrow(Shape{6}, unaligned);
  Tensor target = std::move(moved);
  EXPECT_TRUE(target.borrowed());
  EXPECT_EQ(target.data(), unaligned);
  EXPECT_TRUE(Tensor::borrow(Shape{0, 3}, nullptr).empty());
  EXPECT_THROW(Tensor::borrow(Shape{}, unaligned), ShapeError);
}  // a borrowed tensor never frees the caller's memory: ASan would report it here

TEST(TensorTest, ValuesConstructorAndFull) {
  const std::vector<float> v{1, 2, 3, 4, 5, 6};
  Tensor t(Shape{2, 3}, v);
  EXPECT_EQ(t[0], 1.0f);
  EXPECT_EQ(t[5], 6.0f);
  EXPECT_THROW(Tensor(Shape{2, 2}, v), ShapeError);
  Tensor f = Tensor::full(Shape{3, 2}, 2.5f);
  for (float x : f.values()) EXPECT_EQ(x, 2.5f);
  f.fill(-1.0f);
  for (float x : f.values()) EXPECT_EQ(x, -1.0f);
}

TEST(TensorTest, CopyIsDeep) {
  Tensor a(Shape{2, 2}, std::vector<float>{1, 2, 3, 4});
  Tensor b = a;
  EXPECT_NE(a.data(), b.data());
  b[0] = 10.0f;
  EXPECT_EQ(a[0], 1.0f);
  EXPECT_EQ(b.shape(), a.shape());

  Tensor c(Shape{7});
  c = a;  // copy assignment into a tensor of another shape
  EXPECT_EQ(c.shape(), (Shape{2, 2}));
  EXPECT_EQ(c[3], 4.0f);
  c[3] = 0.0f;
  EXPECT_EQ(a[3], 4.0f);
  const Tensor& alias = c;
  c = alias;  // self-assignment keeps the contents
  EXPECT_EQ(c[2], 3.0f);

  Tensor d;
  Tensor e = d;  // copying an empty default tensor
  EXPECT_EQ(e.size(), 0);
}

TEST(TensorTest, MoveTransfersStorage) {
  Tensor a(Shape{3, 4});
  a.fill(7.0f);
  const float* p = a.data();
  Tensor b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.shape(), (Shape{3, 4}));
  EXPECT_EQ(b[11], 7.0f);
  Tensor c;
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.size(), 12);
  // A moved-from tensor can be reassigned and used again.
  b = Tensor::full(Shape{2}, 1.0f);
  EXPECT_EQ(b.size(), 2);
  EXPECT_EQ(b[1], 1.0f);
}

TEST(TensorTest, MovedFromTensorIsEmpty) {
  // The class invariant size() == shape().size() * (storage present) must survive a move:
  // a moved-from tensor whose size() is still 12 but data() is null would make fill(),
  // all_finite() or values() touch a null pointer.
  Tensor a(Shape{3, 4});
  Tensor b = std::move(a);
  EXPECT_EQ(a.size(), 0);  // NOLINT(bugprone-use-after-move): testing the moved-from state
  EXPECT_TRUE(a.empty());
  EXPECT_TRUE(a.values().empty());
}

TEST(TensorTest, ResizeReusesStorageForEqualCount) {
  Tensor t(Shape{8, 16});
  const float* p = t.data();
  t.resize(Shape{16, 8});
  EXPECT_EQ(t.data(), p);
  EXPECT_EQ(t.shape(), (Shape{16, 8}));
  t.resize(Shape{128});
  EXPECT_EQ(t.data(), p);
  t.resize(Shape{1000, 3});
  EXPECT_EQ(t.size(), 3000);
  EXPECT_EQ(t.shape(), (Shape{1000, 3}));
  EXPECT_TRUE(aligned64(t.data()));
  t.fill(1.0f);  // the whole new extent is writable
  EXPECT_EQ(t[2999], 1.0f);
  Tensor u;  // resize of a default tensor allocates
  u.resize(Shape{5});
  EXPECT_EQ(u.size(), 5);
  EXPECT_NE(u.data(), nullptr);
}

TEST(TensorTest, ResizeLikeReplacesOneDimAndKeepsTheBuffer) {
  Tensor t;
  t.resize_like(Shape{32, 28, 28}, 0, 32);
  EXPECT_EQ(t.shape(), (Shape{32, 28, 28}));
  const float* p = t.data();
  t.resize_like(Shape{100, 28, 28}, 0, 16);  // smaller: same buffer
  EXPECT_EQ(t.shape(), (Shape{16, 28, 28}));
  EXPECT_EQ(t.size(), 16 * 28 * 28);
  EXPECT_EQ(t.data(), p);
  t.resize_like(Shape{8, 28, 28}, 0, 32);  // back to the capacity: same buffer
  EXPECT_EQ(t.shape(), (Shape{32, 28, 28}));
  EXPECT_EQ(t.data(), p);
  t.resize_like(Shape{32, 28, 28}, 2, 64);  // larger: reallocates
  EXPECT_EQ(t.shape(), (Shape{32, 28, 64}));
  EXPECT_EQ(t.size(), 32 * 28 * 64);
  t.resize_like(Shape{5, 3}, 1, 10);  // another rank
  EXPECT_EQ(t.shape(), (Shape{5, 10}));
}

TEST(TensorTest, Reshaped) {
  Tensor t(Shape{2, 3}, std::vector<float>{0, 1, 2, 3, 4, 5});
  Tensor r = t.reshaped(Shape{3, 2});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  for (std::int64_t i = 0; i < 6; ++i) EXPECT_EQ(r[i], static_cast<float>(i));
  Tensor flat = t.reshaped(Shape{6});
  EXPECT_EQ(flat.rank(), 1);
  EXPECT_THROW(t.reshaped(Shape{4}), ShapeError);
  EXPECT_THROW(t.reshaped(Shape{2, 4}), ShapeError);
}

TEST(TensorTest, ReshapedRvalueMovesTheStorage) {
  Tensor t(Shape{2, 3}, std::vector<float>{0, 1, 2, 3, 4, 5});
  const float* p = t.data();
  Tensor r = std::move(t).reshaped(Shape{3, 2});
  EXPECT_EQ(r.data(), p);
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_EQ(r[5], 5.0f);
  EXPECT_TRUE(t.empty());  // NOLINT(bugprone-use-after-move): moved-from tensors are empty
  EXPECT_THROW(std::move(r).reshaped(Shape{4}), ShapeError);
  EXPECT_EQ(r.size(), 6) << "a failed reshape leaves the tensor as it was";
}

TEST(TensorTest, SliceRows) {
  Tensor t(Shape{4, 2, 3});
  for (std::int64_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i);
  Tensor s = t.slice_rows(1, 3);
  EXPECT_EQ(s.shape(), (Shape{2, 2, 3}));
  for (std::int64_t i = 0; i < s.size(); ++i) EXPECT_EQ(s[i], static_cast<float>(6 + i));
  Tensor whole = t.slice_rows(0, 4);
  EXPECT_EQ(whole.shape(), t.shape());
  Tensor none = t.slice_rows(2, 2);
  EXPECT_EQ(none.shape(), (Shape{0, 2, 3}));
  EXPECT_TRUE(none.empty());
  EXPECT_THROW(t.slice_rows(3, 5), ShapeError);
  EXPECT_THROW(t.slice_rows(-1, 2), ShapeError);
  EXPECT_THROW(t.slice_rows(3, 2), ShapeError);
}

TEST(TensorTest, AllFinite) {
  Tensor t(Shape{5});
  EXPECT_TRUE(t.all_finite());
  t[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(t.all_finite());
  t[3] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(t.all_finite());
  t[3] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(t.all_finite());
  t[3] = 3.4e38f;
  EXPECT_TRUE(t.all_finite());
}

TEST(TensorTest, CheckSameShapeNamesWhat) {
  EXPECT_NO_THROW(check_same_shape(Shape{2, 3}, Shape{2, 3}, "x"));
  try {
    check_same_shape(Shape{2, 3}, Shape{3, 2}, "Dense 'dense' kernel");
    FAIL() << "expected ShapeError";
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("Dense 'dense' kernel"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(2, 3)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(3, 2)"), std::string::npos) << msg;
  }
}

TEST(ErrorTest, Hierarchy) {
  EXPECT_THROW(throw NonFiniteError("x"), ValueError);
  EXPECT_THROW(throw ShapeError("x"), Error);
  EXPECT_THROW(throw IoError("x"), Error);
  EXPECT_THROW(throw ValueError("x"), std::runtime_error);
}

TEST(ShapeTest, ElementCountOverflowIsAShapeError) {
  const std::int64_t big = std::int64_t{1} << 40;
  EXPECT_THROW((Shape{big, big}), ShapeError);
  EXPECT_NO_THROW((Shape{big, 4}));
}

}  // namespace
}  // namespace bnorm
