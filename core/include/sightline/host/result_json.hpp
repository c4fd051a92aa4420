#pragma once
#include <nlohmann/json.hpp>
#include <sightline/result.hpp>

namespace sightline::host {

// The wire form of a result, as in DESIGN.md's HTTP API.
nlohmann::json to_json(const Result& result);

}  // namespace sightline::host
