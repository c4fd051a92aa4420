#pragma once
// Response bodies of the HTTP transport: the result JSON of DESIGN.md's HTTP API (the same form as
// the CLI's `sightline query`) and {"error": {"code", "message"}} bodies, plus the mapping from
// sightline error codes to HTTP statuses.
#include <nlohmann/json.hpp>
#include <sightline/error.hpp>
#include <sightline/result.hpp>

#include <string>
#include <string_view>

namespace sightline::http {

// {request_id, variant, matches: [{id, score, inliers, polygon: [[x,y]x4], metadata}], timings_ms}
// (and "error" when the result carries one).
nlohmann::json result_json(const Result& result);

// {"error": {"code": ..., "message": ...}} plus "request_id" when one is known.
nlohmann::json error_json(std::string_view code, std::string_view message, std::string_view request_id = {});

// What a recognition or gallery change failed with, as an HTTP status. resource_exhausted means a
// full queue (503, retry later) when `exhausted_is_queue`, else a size or pixel limit (413).
int status_for(std::string_view code, bool exhausted_is_queue);
inline int status_for(ErrorCode code, bool exhausted_is_queue) { return status_for(to_string(code), exhausted_is_queue); }

}  // namespace sightline::http
