#pragma once
#include <spdlog/logger.h>

#include <memory>
#include <string>

#include "sightline/config.hpp"
#include "sightline/metrics.hpp"
#include "sightline/storage.hpp"

namespace sightline {

// A plugin's only door into the host: its validated config, a logger named after it, the host's
// metrics and the named storages of the config's `storages:` section.
class SIGHTLINE_API Context {
public:
    virtual ~Context() = default;
    virtual const Config& config() const = 0;
    virtual std::shared_ptr<spdlog::logger> logger() const = 0;
    virtual Metrics& metrics() const = 0;
    // Throws ErrorCode::not_found naming the storages that exist.
    virtual std::shared_ptr<Storage> storage(const std::string& name) const = 0;
};

}  // namespace sightline
