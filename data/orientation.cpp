// Affine helpers, orientation codes, reorientation of volumes and its inverse, and the
// image/label geometry check. Axis conventions: see med3d/data/nifti.h.
#include <cmath>
#include <cstring>

#include "data/nifti_internal.h"

namespace med3d {
namespace nifti_detail {

Mat4 identity4() {
  Mat4 m{};
  for (int i = 0; i < 4; ++i) m[5 * i] = 1.0;
  return m;
}

Mat4 mul4(const Mat4& a, const Mat4& b) {
  Mat4 c{};
  for (int r = 0; r < 4; ++r)
    for (int k = 0; k < 4; ++k)
      for (int col = 0; col < 4; ++col) c[4 * r + col] += a[4 * r + k] * b[4 * k + col];
  return c;
}

Mat4 from_dmat44(const nifti_dmat44& m) {
  Mat4 out{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) out[4 * r + c] = m.m[r][c];
  return out;
}

nifti_dmat44 to_dmat44(const Mat4& m) {
  nifti_dmat44 out;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) out.m[r][c] = m[4 * r + c];
  return out;
}

double column_norm(const Mat4& m, int col) {
  return std::sqrt(m[col] * m[col] + m[4 + col] * m[4 + col] + m[8 + col] * m[8 + col]);
}

double det3(const Mat4& m) {
  return m[0] * (m[5] * m[10] - m[6] * m[9]) - m[1] * (m[4] * m[10] - m[6] * m[8]) +
         m[2] * (m[4] * m[9] - m[5] * m[8]);
}

bool all_finite(const Mat4& m) {
  for (double v : m)
    if (!std::isfinite(v)) return false;
  return true;
}

std::array<double, 3> spacing_of(const Mat4& affine) {
  return {column_norm(affine, 2), column_norm(affine, 1), column_norm(affine, 0)};
}

}  // namespace nifti_detail

using namespace nifti_detail;

namespace {

// The world axis (0 = x, 1 = y, 2 = z) and direction (+1/-1) of one voxel axis.
struct Direction {
  int world = 0;
  int sign = 1;
};

// For voxel axes i, j, k: the closest world axis, each world axis used once (largest
// normalised component first, so oblique affines get a consistent answer).
std::array<Direction, 3> voxel_directions(const char* op, const Mat4& affine) {
  double m[3][3];
  for (int c = 0; c < 3; ++c) {
    const double norm = column_norm(affine, c);
    if (!(norm > 0) || !std::isfinite(norm))
      detail::throw_error(op, ": affine column ", c, " has length ", norm,
                          "; a voxel axis must map to a finite non-zero world direction");
    for (int r = 0; r < 3; ++r) m[r][c] = affine[4 * r + c] / norm;
  }
  std::array<Direction, 3> out{};
  bool row_used[3] = {}, col_used[3] = {};
  for (int step = 0; step < 3; ++step) {
    int best_r = -1, best_c = -1;
    double best = -1;
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 3; ++c)
        if (!row_used[r] && !col_used[c] && std::abs(m[r][c]) > best)
          best = std::abs(m[r][c]), best_r = r, best_c = c;
    row_used[best_r] = col_used[best_c] = true;
    out[best_c] = {best_r, m[best_r][best_c] < 0 ? -1 : 1};
  }
  return out;
}

constexpr char kLetters[3][2] = {{'R', 'L'}, {'A', 'P'}, {'S', 'I'}};

std::array<Direction, 3> parse_code(const char* op, const std::string& code) {
  std::array<Direction, 3> out{};
  bool seen[3] = {};
  bool ok = code.size() == 3;
  for (int a = 0; ok && a < 3; ++a) {
    ok = false;
    for (int w = 0; w < 3; ++w)
      for (int s = 0; s < 2; ++s)
        if (code[a] == kLetters[w][s] && !seen[w]) {
          out[a] = {w, s == 0 ? 1 : -1};
          seen[w] = ok = true;
        }
  }
  if (!ok)
    detail::throw_error(op, ": orientation code '", code, "' is invalid; use three letters, one "
                        "of R/L, A/P and S/I each, e.g. \"RAS\" or \"LPS\"");
  return out;
}

// out tensor axis a (of the last three) = in axis perm[a], reversed when flip[a].
Tensor permute_flip(const Tensor& in, const std::array<int, 3>& perm,
                    const std::array<bool, 3>& flip) {
  const int rank = in.rank();
  const Shape& s = in.shape();
  std::array<int64_t, 3> in_dim{s[rank - 3], s[rank - 2], s[rank - 1]};
  std::array<int64_t, 3> in_stride{in_dim[1] * in_dim[2], in_dim[2], 1};
  std::array<int64_t, 5> out_extents{};
  for (int i = 0; i < rank - 3; ++i) out_extents[i] = s[i];
  std::array<int64_t, 3> out_dim{}, step{};
  int64_t start = 0;
  for (int a = 0; a < 3; ++a) {
    out_dim[a] = in_dim[perm[a]];
    out_extents[rank - 3 + a] = out_dim[a];
    step[a] = flip[a] ? -in_stride[perm[a]] : in_stride[perm[a]];
    if (flip[a]) start += in_stride[perm[a]] * (out_dim[a] - 1);
  }
  Tensor out = in.context().empty(Shape(std::span<const int64_t>(out_extents.data(), rank)),
                                  in.dtype());
  const int64_t volume = in_dim[0] * in_dim[1] * in_dim[2];
  const int64_t outer = in.numel() / std::max<int64_t>(volume, 1);
  const std::size_t esize = dtype_size(in.dtype());
  auto copy = [&]<class E>() {
    const E* src = static_cast<const E*>(in.raw_data());
    E* dst = static_cast<E*>(out.raw_data());
    const int64_t planes = outer * out_dim[0];
#pragma omp parallel for if (planes * out_dim[1] * out_dim[2] > kParallelVoxels) schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t o = p / out_dim[0], a0 = p % out_dim[0];
      const E* base = src + o * volume + start + a0 * step[0];
      E* row = dst + p * out_dim[1] * out_dim[2];
      for (int64_t a1 = 0; a1 < out_dim[1]; ++a1)
        for (int64_t a2 = 0; a2 < out_dim[2]; ++a2)
          *row++ = base[a1 * step[1] + a2 * step[2]];
    }
  };
  switch (esize) {
    case 1: copy.template operator()<uint8_t>(); break;
    case 4: copy.template operator()<uint32_t>(); break;
    case 8: copy.template operator()<uint64_t>(); break;
    default: detail::throw_error("reorient: unsupported element size ", esize);
  }
  return out;
}

void check_grid_tensor(const char* op, const Volume& volume, const Tensor& tensor) {
  MED3D_CHECK(tensor.defined() && volume.data.defined(), op, ": undefined tensor or volume");
  MED3D_CHECK(tensor.device().is_cpu(), op, ": expected a CPU tensor, got ", tensor.str());
  const int rank = tensor.rank();
  const Shape& grid = volume.data.shape();
  MED3D_CHECK(rank >= 3 && grid.rank() == 3 && tensor.dim(-3) == grid[0] &&
                  tensor.dim(-2) == grid[1] && tensor.dim(-1) == grid[2],
              op, ": expected a tensor [..., D, H, W] on the volume's grid ", grid.str(), ", got ",
              tensor.shape().str());
}

}  // namespace

bool AxisMap::is_identity() const {
  for (int a = 0; a < 3; ++a)
    if (axis[a] != a || flip[a]) return false;
  return true;
}

std::string orientation_code(const std::array<double, 16>& affine) {
  const std::array<Direction, 3> dirs = voxel_directions("orientation_code", affine);
  std::string code(3, '?');
  for (int v = 0; v < 3; ++v) code[v] = kLetters[dirs[v].world][dirs[v].sign > 0 ? 0 : 1];
  return code;
}

Volume reorient_to(const Volume& volume, const std::string& code) {
  const char* op = "reorient_to";
  const std::array<Direction, 3> target = parse_code(op, code);
  const std::array<Direction, 3> current = voxel_directions(op, volume.affine);
  check_grid_tensor(op, volume, volume.data);
  MED3D_CHECK(volume.data.rank() == 3, op, ": expected volume data [D, H, W], got ",
              volume.data.shape().str());
  // Voxel axes (i, j, k): target voxel axis t is current voxel axis src[t].
  std::array<int, 3> src{};
  std::array<bool, 3> flip_voxel{};
  for (int t = 0; t < 3; ++t)
    for (int s = 0; s < 3; ++s)
      if (current[s].world == target[t].world) {
        src[t] = s;
        flip_voxel[t] = current[s].sign != target[t].sign;
      }
  // old voxel index = T * new voxel index, so new affine = affine * T.
  Mat4 t = identity4();
  t[0] = t[5] = t[10] = 0;
  const Shape& shape = volume.data.shape();
  for (int v = 0; v < 3; ++v) {
    const int s = src[v];
    const int64_t n = shape[2 - s];  // voxel axis s is tensor axis 2 - s
    t[4 * s + v] = flip_voxel[v] ? -1.0 : 1.0;
    t[4 * s + 3] = flip_voxel[v] ? static_cast<double>(n - 1) : 0.0;
  }
  // The same permutation in tensor axes (tensor axis a is voxel axis 2 - a).
  std::array<int, 3> perm{};
  std::array<bool, 3> flip{};
  for (int a = 0; a < 3; ++a) {
    perm[a] = 2 - src[2 - a];
    flip[a] = flip_voxel[2 - a];
  }
  Volume out;
  out.data = permute_flip(volume.data, perm, flip);
  out.affine = mul4(volume.affine, t);
  out.spacing = spacing_of(out.affine);
  out.header = volume.header;
  out.from_file.file_shape = volume.from_file.file_shape;
  for (int a = 0; a < 3; ++a) {
    out.from_file.axis[a] = volume.from_file.axis[perm[a]];
    out.from_file.flip[a] = flip[a] != volume.from_file.flip[perm[a]];
  }
  return out;
}

Tensor to_file_orientation(const Volume& volume, const Tensor& tensor) {
  check_grid_tensor("to_file_orientation", volume, tensor);
  const AxisMap& map = volume.from_file;
  if (map.is_identity()) return tensor;
  // File axis map.axis[a] comes from this grid's axis a.
  std::array<int, 3> perm{};
  std::array<bool, 3> flip{};
  for (int a = 0; a < 3; ++a) {
    perm[map.axis[a]] = a;
    flip[map.axis[a]] = map.flip[a];
  }
  return permute_flip(tensor, perm, flip);
}

void check_same_geometry(const Volume& image, const Volume& label, double tolerance) {
  const char* op = "check_same_geometry";
  MED3D_CHECK(image.data.defined() && label.data.defined(), op, ": undefined volume data");
  MED3D_CHECK(image.data.shape() == label.data.shape(), op, ": image '", image.header.path,
              "' and label '", label.header.path, "' differ in shape (dim): ",
              image.data.shape().str(), " vs ", label.data.shape().str(),
              " [D, H, W]; the label must be on the image's voxel grid");
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) {
      const double a = image.affine[4 * r + c], b = label.affine[4 * r + c];
      MED3D_CHECK(std::abs(a - b) <= tolerance, op, ": image '", image.header.path,
                  "' and label '", label.header.path, "' differ in affine[", r, "][", c, "]: ", a,
                  " vs ", b, " (tolerance ", tolerance, " mm; image affine from ",
                  image.header.affine_source, ", label affine from ", label.header.affine_source,
                  "); resample the label onto the image grid or fix its header");
    }
}

}  // namespace med3d
