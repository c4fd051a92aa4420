#pragma once
#include <chrono>
#include <functional>

#include "sightline/service.hpp"

namespace sightline {

class SIGHTLINE_API Transport : public Plugin {
public:
    // Starts serving in the transport's own threads and returns. The service outlives the transport.
    virtual void start(Service& service) = 0;
    // Stop accepting, let in-flight requests finish until the deadline, then return.
    virtual void stop(std::chrono::milliseconds drain_deadline) = 0;
};

}  // namespace sightline
