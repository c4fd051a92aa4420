#pragma once
#include <stdexcept>
#include <string>

#include "sightline/version.hpp"

namespace sightline {

// Codes follow Triton's short list; transports map them to statuses (invalid_argument → 400 ...).
enum class ErrorCode {
    invalid_argument,  // the caller's input is wrong (bad image, bad key, bad config value)
    not_found,
    already_exists,
    resource_exhausted,  // a configured limit was hit (queue, bytes, pixels)
    unavailable,         // a backend is down; retrying may help
    deadline_exceeded,
    unsupported,
    data_loss,  // stored data is damaged
    internal,
};

inline const char* to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::invalid_argument: return "invalid_argument";
        case ErrorCode::not_found: return "not_found";
        case ErrorCode::already_exists: return "already_exists";
        case ErrorCode::resource_exhausted: return "resource_exhausted";
        case ErrorCode::unavailable: return "unavailable";
        case ErrorCode::deadline_exceeded: return "deadline_exceeded";
        case ErrorCode::unsupported: return "unsupported";
        case ErrorCode::data_loss: return "data_loss";
        case ErrorCode::internal: return "internal";
    }
    return "internal";
}

// The one error type every plugin call and host API throws. Default visibility so that a catch in
// the host matches an Error thrown inside a plugin library.
class SIGHTLINE_API Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const noexcept { return code_; }

private:
    ErrorCode code_;
};

}  // namespace sightline
