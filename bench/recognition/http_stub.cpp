// Built instead of http.cpp when cpp-httplib (Debian: libcpp-httplib-dev) is not installed.
#include "bench.hpp"

namespace sightline::bench {

bool http_driver_available() { return false; }

std::unique_ptr<Driver> make_http_driver(const Options&) {
    throw UsageError("--http: this build has no HTTP client (install libcpp-httplib-dev and reconfigure)");
}

}  // namespace sightline::bench
