#pragma once
#include "sightline/result.hpp"

namespace sightline {

struct Event {
    Result result;  // carries request id, variant, matches, timings, error
    std::map<std::string, std::string> client_fields;
};

// Sinks batch; the host calls flush() on shutdown. A failing sink is logged and counted by the
// host and never fails a request.
class SIGHTLINE_API ResultSink : public Plugin {
public:
    virtual void publish(const Event& event) = 0;
    virtual void flush() = 0;
};

}  // namespace sightline
