#include "sightline/host/service.hpp"

#include <nlohmann/json.hpp>

#include "sightline/host/decode.hpp"

namespace sightline::host {

namespace {
using Clock = std::chrono::steady_clock;

std::string content_type_of(std::span<const std::uint8_t> image) {
    try {
        return "image/" + probe_image(image).format;
    } catch (const Error&) {
        return "application/octet-stream";
    }
}
}  // namespace

HostService::HostService(Host& host) : host_(host), log_(make_logger("service")), id_rng_(std::random_device{}()) {
    auto& m = host_.metrics();
    rejected_full_ = &m.counter("requests_rejected_total", "requests refused before any work",
                                {{"reason", "queue_full"}});
    rejected_timeout_ = &m.counter("requests_rejected_total", "requests refused before any work",
                                   {{"reason", "deadline_exceeded"}});
    queue_depth_ = &m.gauge("queue_depth", "requests waiting for a worker");
    gallery_items_ = &m.gauge("gallery_items", "items in the gallery");
}

HostService::~HostService() {
    // Jobs on the host's workers point at this service: wait for every one (each is bounded by its
    // request deadline).
    draining_ = true;
    std::unique_lock lock(inflight_mutex_);
    inflight_cv_.wait(lock, [&] { return inflight_ == 0; });
}

std::string HostService::new_request_id() {
    std::lock_guard lock(id_mutex_);
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id_rng_()));
    return buf;
}

Request HostService::prepare(Request request) {
    if (draining_) throw Error(ErrorCode::unavailable, "the server is shutting down");
    if (request.id.empty()) request.id = new_request_id();
    if (request.deadline == Clock::time_point::max()) request.deadline = Clock::now() + host_.limits().request_timeout;
    if (request.image.size() > host_.limits().max_body_bytes)
        throw Error(ErrorCode::resource_exhausted, "the image is " + std::to_string(request.image.size()) +
                                                       " bytes; limits.max_body_bytes is " +
                                                       std::to_string(host_.limits().max_body_bytes));
    return request;
}

Result HostService::run(const Request& request) {
    Result r;
    if (Clock::now() > request.deadline) {
        rejected_timeout_->inc();
        r.request_id = request.id;
        r.variant = host_.default_pipeline();
        r.error = ErrorInfo{"deadline_exceeded", "the request waited in the queue past its deadline"};
    } else {
        r = host_.pipeline().recognize(request);
    }
    publish(r, request);
    return r;
}

void HostService::publish(const Result& result, const Request& request) {
    if (host_.sinks().empty()) return;
    Event e{result, request.client_fields};
    for (const auto& s : host_.sinks()) {
        try {
            s.sink->publish(e);
        } catch (const std::exception& ex) {
            host_.metrics().counter("sink_failures_total", "events a sink failed to take", {{"sink", s.name}}).inc();
            log_->error("{}: could not publish the result of request {}: {}", s.name, request.id, ex.what());
        }
    }
}

Result HostService::recognize(Request request) {
    request = prepare(std::move(request));
    const auto deadline = request.deadline;
    // The in-flight count follows the job, not the caller: a caller that gave up (504) leaves a job
    // that still uses this service, and drain() and the destructor must wait for it.
    {
        std::lock_guard lock(inflight_mutex_);
        ++inflight_;
    }
    std::future<Result> future;
    try {
        auto shared = std::make_shared<Request>(std::move(request));
        future = host_.workers().try_submit([this, shared] {
            struct Done {
                HostService* s;
                ~Done() { s->job_done(); }
            } done{this};
            return run(*shared);
        });
    } catch (const Error& e) {
        job_done();
        if (e.code() == ErrorCode::resource_exhausted) rejected_full_->inc();
        throw;
    }
    queue_depth_->set(static_cast<double>(host_.workers().queued()));
    if (future.wait_until(deadline) != std::future_status::ready) {
        rejected_timeout_->inc();
        throw Error(ErrorCode::deadline_exceeded, "no answer within limits.request_timeout (" +
                                                      std::to_string(host_.limits().request_timeout.count()) + " ms)");
    }
    return future.get();
}

void HostService::job_done() {
    std::lock_guard lock(inflight_mutex_);
    --inflight_;
    inflight_cv_.notify_all();
}

std::string HostService::submit(Request request) {
    request = prepare(std::move(request));
    // Queued requests have no client waiting on the deadline: they get the full timeout once a
    // worker takes them, so a burst does not expire in the queue.
    request.deadline = Clock::time_point::max();
    const std::string id = request.id;
    {
        std::lock_guard lock(requests_mutex_);
        forget_expired_locked();
        if (requests_.count(id)) throw Error(ErrorCode::already_exists, "request id '" + id + "' is already in use");
        requests_[id] = Stored{RequestState::pending, std::nullopt, Clock::time_point::max()};
    }
    {
        std::lock_guard lock(inflight_mutex_);
        ++inflight_;
    }
    try {
        auto shared = std::make_shared<Request>(std::move(request));
        host_.workers().try_submit([this, shared] {
            struct Done {
                HostService* s;
                ~Done() { s->job_done(); }
            } done{this};
            Request r = *shared;
            r.deadline = Clock::now() + host_.limits().request_timeout;
            Result result = run(r);
            {
                std::lock_guard lock(requests_mutex_);
                auto expires = Clock::now() + host_.limits().results_ttl;
                requests_[r.id] = Stored{RequestState::done, std::move(result), expires};
                expiry_.emplace_back(expires, r.id);
            }
        });
    } catch (const Error& e) {
        {
            std::lock_guard lock(requests_mutex_);
            requests_.erase(id);
        }
        job_done();
        if (e.code() == ErrorCode::resource_exhausted) rejected_full_->inc();
        throw;
    }
    queue_depth_->set(static_cast<double>(host_.workers().queued()));
    return id;
}

void HostService::forget_expired_locked() const {
    const auto now = Clock::now();
    while (!expiry_.empty() && expiry_.front().first <= now) {
        auto it = requests_.find(expiry_.front().second);
        if (it != requests_.end() && it->second.expires <= now) requests_.erase(it);
        expiry_.pop_front();
    }
}

RequestStatus HostService::status(const std::string& request_id) const {
    std::lock_guard lock(requests_mutex_);
    forget_expired_locked();
    auto it = requests_.find(request_id);
    if (it == requests_.end()) return {};
    return {it->second.state, it->second.result};
}

void HostService::put_item(const std::string& id, std::span<const std::uint8_t> image, const std::string& metadata_json) {
    check_id(id);
    std::string metadata = metadata_json.empty() ? "{}" : metadata_json;
    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse(metadata);
    } catch (const nlohmann::json::parse_error& e) {
        throw Error(ErrorCode::invalid_argument, std::string("metadata is not JSON: ") + e.what());
    }
    if (!parsed.is_object()) throw Error(ErrorCode::invalid_argument, "metadata must be a JSON object");
    // While the gallery loads, its index may be replaced by a snapshot: a change now could be lost.
    if (!ready_) throw Error(ErrorCode::unavailable, "the gallery is still loading; retry when /readyz answers 200");
    // Held across the extraction, the storage writes, the journal and every pipeline's index.
    auto guard = item_locks_.lock(id);
    // Every pipeline's features first (this decodes the image): a broken image, or one an extractor
    // fails on, never enters the gallery, and nothing is written before all of them exist.
    std::vector<FeatureRecord> records;
    std::vector<Gallery::RecordBytes> encoded;
    for (const auto& name : host_.pipeline_names()) {
        records.push_back(host_.pipeline(name).extract_item(id, image));
        encoded.push_back({records.back().signature, encode_record(records.back())});
    }
    const std::string stored = parsed.dump();
    host_.gallery().put(id, image, stored, encoded);
    // The change is stored; the indexes follow from memory (no storage round trip that could fail).
    const auto names = host_.pipeline_names();
    for (std::size_t i = 0; i < names.size(); ++i) host_.pipeline(names[i]).add_record(records[i], stored);
    gallery_items_->set(static_cast<double>(host_.pipeline().size()));
}

std::optional<GalleryItem> HostService::get_item(const std::string& id) const {
    check_id(id);
    auto guard = item_locks_.lock(id);  // not halfway through a change
    auto stored = host_.gallery().item(id);
    if (!stored) return std::nullopt;
    if (!stored->verified) {
        // The old layout has no checksum: an image that does not decode is damaged, not served.
        try {
            decode_gray(stored->image, {host_.limits().max_body_bytes, host_.limits().max_pixels}, 64);
        } catch (const Error& e) {
            throw Error(ErrorCode::data_loss, "gallery item '" + id + "' is damaged: its image cannot be decoded (" +
                                                  e.what() + "); put it again or remove it");
        }
    }
    GalleryItem item;
    item.id = id;
    item.content_type = content_type_of(stored->image);
    item.image = std::move(stored->image);
    item.metadata_json = std::move(stored->metadata);
    return item;
}

bool HostService::remove_item(const std::string& id) {
    check_id(id);
    if (!ready_) throw Error(ErrorCode::unavailable, "the gallery is still loading; retry when /readyz answers 200");
    auto guard = item_locks_.lock(id);
    // Storage first: if it fails the item is still there, and so it stays in the indexes.
    bool any = host_.gallery().remove(id);
    for (const auto& name : host_.pipeline_names()) any = host_.pipeline(name).remove(id) || any;
    gallery_items_->set(static_cast<double>(host_.pipeline().size()));
    return any;
}

GalleryPage HostService::list_items(const std::string& after, std::size_t limit) const {
    auto ids = host_.gallery().ids();
    std::sort(ids.begin(), ids.end());
    GalleryPage page;
    page.total = ids.size();
    auto it = after.empty() ? ids.begin() : std::upper_bound(ids.begin(), ids.end(), after);
    for (; it != ids.end() && page.ids.size() < limit; ++it) page.ids.push_back(*it);
    if (it != ids.end() && !page.ids.empty()) page.next_after = page.ids.back();
    return page;
}

std::string HostService::metrics_text() const {
    queue_depth_->set(static_cast<double>(host_.workers().queued()));
    return host_.metrics().render();
}

ServiceLimits HostService::limits() const { return {host_.limits().max_body_bytes, host_.limits().request_timeout}; }

void HostService::load_gallery(const Pipeline::Progress& progress) {
    host_.load_gallery(progress);
    gallery_items_->set(static_cast<double>(host_.pipeline().size()));
    ready_ = true;
}

std::size_t HostService::drain(std::chrono::milliseconds deadline) {
    draining_ = true;
    std::unique_lock lock(inflight_mutex_);
    inflight_cv_.wait_for(lock, deadline, [&] { return inflight_ == 0; });
    return inflight_;
}

void HostService::flush_sinks() {
    for (const auto& s : host_.sinks()) {
        try {
            s.sink->flush();
        } catch (const std::exception& ex) {
            host_.metrics().counter("sink_failures_total", "events a sink failed to take", {{"sink", s.name}}).inc();
            log_->error("{}: flush failed: {}", s.name, ex.what());
        }
    }
}

}  // namespace sightline::host
