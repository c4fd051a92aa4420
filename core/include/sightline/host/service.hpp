#pragma once
#include <sightline/service.hpp>
#include <sightline/sink.hpp>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>

#include "sightline/host/host.hpp"
#include "sightline/host/id_locks.hpp"

namespace sightline::host {

// The host's side of every transport: recognition on the worker pool, the queue-and-poll store,
// gallery changes, readiness and metrics; every recognition is published to the host's sinks.
class HostService final : public Service {
public:
    explicit HostService(Host& host);
    ~HostService() override;

    Result recognize(Request request) override;
    std::string submit(Request request) override;
    RequestStatus status(const std::string& request_id) const override;

    void put_item(const std::string& id, std::span<const std::uint8_t> image, const std::string& metadata_json) override;
    std::optional<GalleryItem> get_item(const std::string& id) const override;
    bool remove_item(const std::string& id) override;
    GalleryPage list_items(const std::string& after, std::size_t limit) const override;

    bool ready() const override { return ready_.load(); }
    std::string metrics_text() const override;
    ServiceLimits limits() const override;

    // Loads the gallery into every pipeline; ready() turns true afterwards.
    void load_gallery(const Pipeline::Progress& progress = {});
    // Refuses new work, then waits (until the deadline) for queued and running requests to finish.
    // Returns how many were still unfinished.
    std::size_t drain(std::chrono::milliseconds deadline);
    // Flushes every sink; failures are logged and counted.
    void flush_sinks();

private:
    std::string new_request_id();
    Request prepare(Request request);
    Result run(const Request& request);
    void publish(const Result& result, const Request& request);
    void forget_expired_locked() const;
    void job_done();

    Host& host_;
    std::shared_ptr<spdlog::logger> log_;
    std::atomic<bool> ready_{false};
    std::atomic<bool> draining_{false};

    std::mutex id_mutex_;
    std::mt19937_64 id_rng_;

    // Changes (and reads) of one gallery item run one at a time: a put racing a remove or another
    // put of the same id would otherwise leave the indexes holding what storage does not.
    mutable IdLocks item_locks_;

    struct Stored {
        RequestState state = RequestState::pending;
        std::optional<Result> result;
        std::chrono::steady_clock::time_point expires;
    };
    mutable std::mutex requests_mutex_;
    mutable std::map<std::string, Stored> requests_;
    mutable std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> expiry_;

    std::mutex inflight_mutex_;
    std::condition_variable inflight_cv_;
    std::size_t inflight_ = 0;

    Counter* rejected_full_ = nullptr;
    Counter* rejected_timeout_ = nullptr;
    Gauge* queue_depth_ = nullptr;
    Gauge* gallery_items_ = nullptr;
};

}  // namespace sightline::host
