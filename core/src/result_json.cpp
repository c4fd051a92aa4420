#include "sightline/host/result_json.hpp"

#include <cmath>

namespace sightline::host {

nlohmann::json to_json(const Result& r) {
    nlohmann::json j;
    j["request_id"] = r.request_id;
    j["variant"] = r.variant;
    j["matches"] = nlohmann::json::array();
    auto round1 = [](double v) { return std::round(v * 10.0) / 10.0; };
    for (const auto& m : r.matches) {
        nlohmann::json poly = nlohmann::json::array();
        for (const auto& p : m.polygon) poly.push_back({round1(p.x), round1(p.y)});
        auto meta = nlohmann::json::parse(m.metadata_json, nullptr, false);
        j["matches"].push_back({{"id", m.id},
                                {"score", std::round(m.score * 1000.0) / 1000.0},
                                {"inliers", m.inliers},
                                {"polygon", poly},
                                {"metadata", meta.is_discarded() ? nlohmann::json::object() : meta}});
    }
    nlohmann::json t = nlohmann::json::object();
    for (const auto& [k, v] : r.timings_ms) t[k] = std::round(v * 100.0) / 100.0;
    j["timings_ms"] = t;
    if (r.error) j["error"] = {{"code", r.error->code}, {"message", r.error->message}};
    return j;
}

}  // namespace sightline::host
