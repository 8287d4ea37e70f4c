#include "med3d/shape.h"

#include <limits>
#include <sstream>

#include "med3d/error.h"

namespace med3d {

Shape::Shape(std::initializer_list<int64_t> extents)
    : Shape(std::span<const int64_t>(extents.begin(), extents.size())) {}

Shape::Shape(std::span<const int64_t> extents) {
  MED3D_CHECK(extents.size() <= static_cast<std::size_t>(kMaxRank), "Shape: expected at most ",
              kMaxRank, " dimensions, got ", extents.size(), "; med3d tensors are at most NCDHW");
  for (std::size_t i = 0; i < extents.size(); ++i) {
    MED3D_CHECK(extents[i] >= 0, "Shape: extent ", i, " must be >= 0, got ", extents[i]);
    extents_[i] = extents[i];
  }
  rank_ = static_cast<int>(extents.size());
  (void)numel();  // rejects element counts that overflow
}

int64_t Shape::operator[](int axis) const {
  MED3D_CHECK(axis >= 0 && axis < rank_, "Shape", str(), ": axis ", axis, " out of range [0, ",
              rank_, ")");
  return extents_[axis];
}

int64_t Shape::dim(int axis) const { return (*this)[axis < 0 ? axis + rank_ : axis]; }

int64_t Shape::numel() const {
  int64_t count = 1;
  for (int i = 0; i < rank_; ++i) {
    MED3D_CHECK(extents_[i] == 0 || count <= std::numeric_limits<int64_t>::max() / extents_[i],
                "Shape: element count overflows int64");
    count *= extents_[i];
  }
  return count;
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (extents_[i] != other.extents_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::ostringstream out;
  out << '[';
  for (int i = 0; i < rank_; ++i) out << (i ? ", " : "") << extents_[i];
  out << ']';
  return out.str();
}

}  // namespace med3d
