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
    // ABI 1.1. For an index: the signature of its pipeline's gallery extractor, so an index whose
    // data was made for one extractor configuration (a trained vocabulary) can refuse another.
    // Empty for other kinds, and when the host does not know it.
    virtual std::string features_signature() const { return {}; }
    // ABI 1.3. The same extractor's descriptor_signature(): compare a vocabulary's trained
    // signature with it through descriptor_mismatch(), so a changed keypoint cap or threshold does
    // not force retraining.
    virtual std::string features_descriptor_signature() const { return features_signature(); }
};

}  // namespace sightline
