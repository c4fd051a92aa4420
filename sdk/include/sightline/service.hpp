#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sightline/result.hpp"
#include "sightline/storage.hpp"

namespace sightline {

// What the host offers a transport. A transport turns its protocol into these calls and their
// sightline::Error codes into its own statuses (invalid_argument → 400, not_found → 404,
// resource_exhausted → 503 or 413, deadline_exceeded → 504 ...). Every method is safe to call from
// many threads at once.
struct GalleryItem {
    std::string id;
    Bytes image;
    std::string content_type;  // image/jpeg, image/png ...
    std::string metadata_json = "{}";
};

struct GalleryPage {
    std::vector<std::string> ids;  // sorted
    std::size_t total = 0;         // items in the gallery
    std::string next_after;        // pass as `after` for the next page; empty on the last page
};

enum class RequestState { unknown, pending, done };

struct RequestStatus {
    RequestState state = RequestState::unknown;
    std::optional<Result> result;  // when done
};

struct ServiceLimits {
    std::uint64_t max_body_bytes = 0;
    std::chrono::milliseconds request_timeout{0};
};

class SIGHTLINE_API Service {
public:
    virtual ~Service() = default;

    // Synchronous recognition on the host's worker pool. The request's id is assigned when empty and
    // its deadline set from limits().request_timeout when not set. Throws Error: resource_exhausted
    // when the queue is full (at once), deadline_exceeded past the deadline, unavailable while
    // shutting down. Bad images are not thrown: they come back in Result::error.
    virtual Result recognize(Request request) = 0;
    // Queues the request and returns its id at once (same refusals as recognize).
    virtual std::string submit(Request request) = 0;
    // A submitted request's state; results are kept for a configured time, then forgotten.
    virtual RequestStatus status(const std::string& request_id) const = 0;

    // Gallery changes are stored (image, metadata, feature records) and indexed before returning;
    // searches keep running meanwhile. put replaces an existing item. Throws invalid_argument for a
    // bad id, image or metadata.
    virtual void put_item(const std::string& id, std::span<const std::uint8_t> image,
                          const std::string& metadata_json) = 0;
    virtual std::optional<GalleryItem> get_item(const std::string& id) const = 0;
    virtual bool remove_item(const std::string& id) = 0;
    // Ids in order, starting after `after` (empty: from the first).
    virtual GalleryPage list_items(const std::string& after, std::size_t limit) const = 0;

    // True once the gallery is loaded into every pipeline.
    virtual bool ready() const = 0;
    // The host's metrics in Prometheus text format.
    virtual std::string metrics_text() const = 0;
    virtual ServiceLimits limits() const = 0;
};

}  // namespace sightline
