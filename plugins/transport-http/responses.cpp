#include "responses.hpp"

#include <cmath>

namespace sightline::http {

nlohmann::json result_json(const Result& r) {
    // Same rounding as the CLI (core/src/result_json.cpp): pixels to 0.1, scores to 0.001, ms to 0.01.
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
                                {"polygon", polygon},
                                {"metadata", metadata}});
    }
    nlohmann::json timings = nlohmann::json::object();
    for (const auto& [stage, ms] : r.timings_ms) timings[stage] = round_to(ms, 100);
    j["timings_ms"] = timings;
    if (r.error) j["error"] = {{"code", r.error->code}, {"message", r.error->message}};
    return j;
}

nlohmann::json error_json(std::string_view code, std::string_view message, std::string_view request_id) {
    nlohmann::json j{{"error", {{"code", std::string(code)}, {"message", std::string(message)}}}};
    if (!request_id.empty()) j["request_id"] = std::string(request_id);
    return j;
}

int status_for(std::string_view code, bool exhausted_is_queue) {
    if (code == "invalid_argument") return 400;
    if (code == "not_found") return 404;
    if (code == "already_exists") return 409;
    if (code == "resource_exhausted") return exhausted_is_queue ? 503 : 413;
    if (code == "unavailable") return 503;
    if (code == "deadline_exceeded") return 504;
    if (code == "unsupported") return 415;
    return 500;  // data_loss, internal, anything unknown
}

}  // namespace sightline::http
