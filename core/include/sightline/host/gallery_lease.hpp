#pragma once
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "sightline/host/gallery.hpp"

namespace sightline::host {

// Who is using a gallery, kept as an object in its own storage (so it works for any storage, local
// or remote): <features>leases/<command>-<host>-<pid>, holding the command, host, pid, start time
// and a heartbeat refreshed every ttl/3 while the holder runs. `sightline serve` holds a serve
// lease (several servers may share a gallery); `sightline ingest` needs the gallery to itself,
// since a running server would not see what it writes until restarted.
//
// A lease is stale, and is removed by the next one who looks, when its heartbeat is older than its
// ttl, or at once when its holder ran on this host and its pid is gone (a server killed with
// SIGKILL). Storages have no create-if-absent, so two processes starting at the same moment may
// both see each other and both refuse; neither writes.
class GalleryLease {
public:
    enum class Kind { serve, ingest };
    static constexpr std::chrono::seconds kDefaultTtl{60};

    // Takes the lease, or throws Error(unavailable) naming the holder that is in the way.
    GalleryLease(Gallery& gallery, Kind kind, std::chrono::seconds ttl = kDefaultTtl);
    ~GalleryLease();  // stops the heartbeat and removes the lease
    GalleryLease(const GalleryLease&) = delete;
    GalleryLease& operator=(const GalleryLease&) = delete;

    const std::string& key() const { return key_; }

private:
    void write(std::chrono::system_clock::time_point now);
    void heartbeat();

    Gallery& gallery_;
    Kind kind_;
    std::chrono::seconds ttl_;
    std::string key_;
    std::string host_;
    std::chrono::system_clock::time_point started_;
    std::mutex mutex_;
    std::condition_variable stop_cv_;
    bool stopping_ = false;
    std::thread thread_;  // last: it uses everything above
};

}  // namespace sightline::host
