#include "sightline/host/result_json.hpp"

#include <sightline/result_json.hpp>

namespace sightline::host {

nlohmann::json to_json(const Result& r) { return result_to_json(r); }

}  // namespace sightline::host
