#pragma once
#include <cstdint>

#include "sightline/error.hpp"
#include "sightline/version.hpp"

namespace sightline {

enum class PluginKind : std::uint32_t { features = 1, index = 2, storage = 3, transport = 4, sink = 5 };

inline const char* to_string(PluginKind kind) {
    switch (kind) {
        case PluginKind::features: return "features";
        case PluginKind::index: return "index";
        case PluginKind::storage: return "storage";
        case PluginKind::transport: return "transport";
        case PluginKind::sink: return "sink";
    }
    return "unknown";
}

// Every plugin object derives from this, so the host can own any of them the same way.
class SIGHTLINE_API Plugin {
public:
    virtual ~Plugin() = default;
};

}  // namespace sightline
