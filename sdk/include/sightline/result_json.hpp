#pragma once
// The wire form of a Result (DESIGN.md's HTTP API), shared by the CLI, transports and sinks.
// Header-only; include it only where nlohmann-json is linked (the rest of the SDK does not need it).
#include <nlohmann/json.hpp>

#include <cmath>

#include "sightline/result.hpp"

namespace sightline {

// Pixels rounded to 0.1, scores to 0.001, milliseconds to 0.01; metadata that is not a JSON object
// becomes {}.
inline nlohmann::json result_to_json(const Result& r) {
    auto round_to = [](double v, double per_unit) { return std::round(v * per_unit) / per_unit; };
    nlohmann::json j;
    j["request_id"] = r.request_id;
    j["variant"] = r.variant;
    j["matches"] = nlohmann::json::array();
    for (const auto& m : r.matches) {
        nlohmann::json polygon = nlohmann::json::array();
        for (const auto& p : m.polygon) polygon.push_back({round_to(p.x, 10), round_to(p.y, 10)});
        auto metadata = nlohmann::json::parse(m.metadata_json, nullptr, false);
        if (metadata.is_discarded() || !metadata.is_object()) metadata = nlohmann::json::object();
        j["matches"].push_back({{"id", m.id},
                                {"score", round_to(m.score, 1000)},
                                {"inliers", m.inliers},
                                {"polygon", std::move(polygon)},
                                {"metadata", std::move(metadata)}});
    }
    nlohmann::json timings = nlohmann::json::object();
    for (const auto& [stage, ms] : r.timings_ms) timings[stage] = round_to(ms, 100);
    j["timings_ms"] = std::move(timings);
    if (r.error) j["error"] = {{"code", r.error->code}, {"message", r.error->message}};
    return j;
}

}  // namespace sightline
