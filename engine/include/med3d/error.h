// med3d::Error is the one exception type the library throws. Messages name the operation,
// the expected and the actual value, and what the caller can do about it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace med3d {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
[[noreturn]] void throw_error(Parts&&... parts) {
  std::ostringstream message;
  (message << ... << std::forward<Parts>(parts));
  throw Error(message.str());
}
}  // namespace detail

}  // namespace med3d

// Throws med3d::Error built from the streamed parts when `cond` is false.
#define MED3D_CHECK(cond, ...)                         \
  do {                                                 \
    if (!(cond)) ::med3d::detail::throw_error(__VA_ARGS__); \
  } while (0)
