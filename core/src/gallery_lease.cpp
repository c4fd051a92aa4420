#include "sightline/host/gallery_lease.hpp"

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <cerrno>
#include <ctime>
#include <optional>

#include "sightline/host/host.hpp"

namespace sightline::host {

namespace {

using SysClock = std::chrono::system_clock;

const char* name_of(GalleryLease::Kind kind) { return kind == GalleryLease::Kind::serve ? "serve" : "ingest"; }

std::string this_host() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

// A host name as a storage key segment.
std::string key_safe(const std::string& s) {
    std::string out;
    for (char c : s.substr(0, 64))
        out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
    return out;
}

std::int64_t unix_seconds(SysClock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string utc(std::int64_t unix) {
    std::time_t t = static_cast<std::time_t>(unix);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

struct Holder {
    std::string command, host;
    long long pid = 0;
    std::int64_t started = 0, heartbeat = 0, ttl = 0;
};

std::optional<Holder> parse(const Bytes& bytes) {
    auto j = nlohmann::json::parse(bytes.begin(), bytes.end(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    try {
        return Holder{j.at("command").get<std::string>(), j.at("host").get<std::string>(), j.at("pid").get<long long>(),
                      j.at("started").get<std::int64_t>(), j.at("heartbeat").get<std::int64_t>(),
                      j.at("ttl").get<std::int64_t>()};
    } catch (const nlohmann::json::exception&) {
        return std::nullopt;
    }
}

// Why the holder no longer holds anything, or nullopt if it may still be running.
std::optional<std::string> stale(const Holder& h, const std::string& host, std::int64_t now) {
    if (h.host == host && h.pid > 0 && ::kill(static_cast<pid_t>(h.pid), 0) != 0 && errno == ESRCH)
        return "its process is gone";
    if (now - h.heartbeat > h.ttl) return "no heartbeat for " + std::to_string(now - h.heartbeat) + " s";
    return std::nullopt;
}

}  // namespace

GalleryLease::GalleryLease(Gallery& gallery, Kind kind, std::chrono::seconds ttl)
    : gallery_(gallery), kind_(kind), ttl_(ttl), host_(this_host()), started_(SysClock::now()) {
    const std::string prefix = gallery_.lease_prefix();
    key_ = prefix + name_of(kind_) + "-" + key_safe(host_) + "-" + std::to_string(::getpid());
    auto log = make_logger("gallery");
    // Written before looking, so of two processes starting together at least one sees the other.
    write(started_);
    const auto now = unix_seconds(SysClock::now());
    Storage& storage = gallery_.storage();
    for (const auto& key : storage.list(prefix)) {
        if (key == key_) continue;
        auto bytes = storage.get(key);
        if (!bytes) continue;
        auto holder = parse(*bytes);
        if (!holder) {
            log->warn("{}: not a lease; removing it", key);
            storage.remove(key);
            continue;
        }
        if (auto why = stale(*holder, host_, now)) {
            log->info("{}: the lease of `sightline {}` (pid {} on {}) is stale ({}); removing it", key,
                      holder->command, holder->pid, holder->host, *why);
            storage.remove(key);
            continue;
        }
        // Servers share a gallery; an ingest needs it to itself.
        if (kind_ == Kind::serve && holder->command == "serve") continue;
        storage.remove(key_);
        std::string msg = "the gallery is in use by `sightline " + holder->command + "` (pid " +
                          std::to_string(holder->pid) + " on " + holder->host + ", since " + utc(holder->started) +
                          "); ";
        if (holder->command == "serve")
            msg += "a running server would not see what `sightline ingest` writes: add items through its API "
                   "(PUT /v1/gallery/{id}), or stop it first";
        else
            msg += "wait for it to finish";
        msg += ". A lease whose process died is ignored at once on its host, and elsewhere " +
               std::to_string(holder->ttl) + " s after its last heartbeat (" + key + " in the gallery storage)";
        throw Error(ErrorCode::unavailable, msg);
    }
    thread_ = std::thread([this] { heartbeat(); });
}

GalleryLease::~GalleryLease() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    stop_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    try {
        gallery_.storage().remove(key_);
    } catch (const std::exception& e) {
        make_logger("gallery")->warn("{}: the lease could not be removed ({}); it expires by itself", key_, e.what());
    }
}

void GalleryLease::write(SysClock::time_point now) {
    const std::string body = nlohmann::json{{"command", name_of(kind_)},
                                            {"host", host_},
                                            {"pid", static_cast<long long>(::getpid())},
                                            {"started", unix_seconds(started_)},
                                            {"heartbeat", unix_seconds(now)},
                                            {"ttl", ttl_.count()}}
                                 .dump();
    gallery_.storage().put(key_, std::span(reinterpret_cast<const std::uint8_t*>(body.data()), body.size()));
}

void GalleryLease::heartbeat() {
    std::unique_lock lock(mutex_);
    while (!stop_cv_.wait_for(lock, ttl_ / 3, [&] { return stopping_; })) {
        lock.unlock();
        try {
            write(SysClock::now());
        } catch (const std::exception& e) {
            make_logger("gallery")->warn("{}: the lease's heartbeat could not be written: {}", key_, e.what());
        }
        lock.lock();
    }
}

}  // namespace sightline::host
