// Errors across the C boundary: a C++ exception becomes a malloc'ed message in `*err`
// (freed with ove_str_free) and a failure return, never an abort in Rust's process.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace ove_shim {

inline void set_error(char** err, const std::string& message) {
  if (err == nullptr) {
    return;
  }
  char* out = static_cast<char*>(std::malloc(message.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, message.c_str(), message.size() + 1);
  }
  *err = out;
}

}  // namespace ove_shim

#define OVE_TRY try {
#define OVE_CATCH(err, fail)                                         \
  }                                                                  \
  catch (const c10::Error& e) {                                      \
    ove_shim::set_error(err, e.what_without_backtrace());            \
    return fail;                                                     \
  }                                                                  \
  catch (const std::exception& e) {                                  \
    ove_shim::set_error(err, e.what());                              \
    return fail;                                                     \
  }                                                                  \
  catch (...) {                                                      \
    ove_shim::set_error(err, "unknown C++ exception in libtorch");   \
    return fail;                                                     \
  }
