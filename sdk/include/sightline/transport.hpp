#pragma once
#include <chrono>
#include <functional>

#include "sightline/result.hpp"

namespace sightline {

// The host's request handler. It never throws: failures come back in Result::error.
using RequestHandler = std::function<Result(const Request&)>;

class SIGHTLINE_API Transport : public Plugin {
public:
    virtual void start(RequestHandler handler) = 0;
    // Stop accepting, let in-flight requests finish until the deadline, then return.
    virtual void stop(std::chrono::milliseconds drain_deadline) = 0;
};

}  // namespace sightline
