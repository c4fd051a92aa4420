#include "responses.hpp"

#include <sightline/result_json.hpp>

#include <cmath>

namespace sightline::http {

nlohmann::json result_json(const Result& r) { return result_to_json(r); }

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
