// sink-jsonl: one JSON line per recognition, written in batches as whole objects into a named storage
// (a storage has no append). A batch is cut every `roll_every` lines, when the oldest buffered line is
// `roll_interval` old, on flush() and on destruction. Puts happen on a background thread (flush() and
// the destructor write on the caller's thread), so publish() never waits for the storage.
//
// Nothing is dropped silently: a batch whose put fails stays buffered under the same key and is
// retried one roll_interval later (or at flush()); once `max_buffered` lines wait, publish() throws
// resource_exhausted so the host counts the lost result.
#include <sightline/plugin.hpp>
#include <sightline/result_json.hpp>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;
using sightline::Error;
using sightline::ErrorCode;
using Clock = std::chrono::steady_clock;

// "2024-05-01T12:34:56.789Z"
std::string iso8601_utc(std::chrono::system_clock::time_point t) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
    return buf;
}

// "20240501-123456"
std::string compact_utc(std::chrono::system_clock::time_point t) {
    std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%04d%02d%02d-%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf;
}

// The same shape and rounding as the HTTP API's result (core's result_json), plus client fields,
// and the time the sink received it.
std::string to_line(const sightline::Event& e) {
    nlohmann::json j = sightline::result_to_json(e.result);
    nlohmann::json fields = nlohmann::json::object();
    for (const auto& [k, v] : e.client_fields) fields[k] = v;
    j["client_fields"] = std::move(fields);
    j["time"] = iso8601_utc(std::chrono::system_clock::now());
    // Client fields come from the network: invalid UTF-8 becomes U+FFFD instead of an exception.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

class JsonlSink final : public sightline::ResultSink {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description = "results as JSON lines, written in batches as objects into a storage";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 5> keys{{
            {.name = "storage", .type = ConfigType::string, .required = true,
             .description = "name of the storage under storages: that receives the objects"},
            {.name = "prefix", .type = ConfigType::string, .default_value = "results/",
             .description = "key prefix of the objects: <prefix><UTC yyyymmdd-HHMMSS>-<seq>-<random>.jsonl"},
            {.name = "roll_every", .type = ConfigType::integer, .default_value = "1000", .min = 1, .max = 1e6,
             .description = "lines per object: a batch is written once this many lines are buffered"},
            {.name = "roll_interval", .type = ConfigType::duration, .default_value = "60s", .min = 10, .max = 86400000,
             .description = "a buffer whose oldest line is this old is written; also the retry delay after a failed put"},
            {.name = "max_buffered", .type = ConfigType::integer, .default_value = "100000", .min = 1, .max = 1e8,
             .description = "lines held while the storage is slow or failing; beyond this publish fails (counted by the host)"},
        }};
        return keys;
    }

    explicit JsonlSink(sightline::Context& ctx)
        : log_(ctx.logger()),
          storage_name_(ctx.config().get_string("storage")),
          prefix_(ctx.config().get_string("prefix")),
          roll_every_(static_cast<std::size_t>(ctx.config().get_int("roll_every"))),
          roll_interval_(ctx.config().get_duration("roll_interval")),
          max_buffered_(static_cast<std::size_t>(ctx.config().get_int("max_buffered"))) {
        const auto& c = ctx.config();
        if (max_buffered_ < roll_every_)
            throw Error(ErrorCode::invalid_argument,
                        c.where("max_buffered") + ": " + c.key_path("max_buffered") + ": must be at least roll_every (" +
                            std::to_string(roll_every_) + "), found " + std::to_string(max_buffered_));
        // The prefix must make valid keys; check with a key of the shape the sink writes.
        if (auto why = sightline::invalid_key_reason(prefix_ + "20240101-000000-000000-0123456789ab.jsonl"))
            throw Error(ErrorCode::invalid_argument, c.where("prefix") + ": " + c.key_path("prefix") + ": '" + prefix_ +
                                                         "' does not make valid storage keys: " + *why);
        try {
            storage_ = ctx.storage(storage_name_);
        } catch (const Error& e) {
            // A name that is not under storages: is a mistake in the config, not a missing object.
            throw Error(ErrorCode::invalid_argument, c.where("storage") + ": " + c.key_path("storage") + ": " + e.what());
        }
        std::random_device rd;
        char id[16];
        std::snprintf(id, sizeof id, "%04x%08x", rd() & 0xFFFFu, rd());
        instance_ = id;

        // Both labels, so two sinks writing into one storage keep separate series.
        const sightline::Labels labels{{"storage", storage_name_}, {"prefix", prefix_}};
        auto& m = ctx.metrics();
        write_failures_ = &m.counter("sink_jsonl_write_failures_total",
                                     "puts of a sink-jsonl batch that failed (the lines stay buffered and are retried)", labels);
        lines_written_ = &m.counter("sink_jsonl_lines_written_total", "result lines sink-jsonl has stored", labels);
        objects_written_ = &m.counter("sink_jsonl_objects_written_total", "objects sink-jsonl has stored", labels);
        buffered_ = &m.gauge("sink_jsonl_buffered_lines", "result lines sink-jsonl holds, not yet stored", labels);

        writer_ = std::thread([this] { run(); });
    }

    ~JsonlSink() override {
        try {
            {
                std::lock_guard lock(mutex_);
                stop_ = true;
            }
            wake_.notify_all();
            if (writer_.joinable()) writer_.join();
            if (!write(true)) {
                std::lock_guard lock(mutex_);
                log_->error("{} result lines could not be written to storage '{}' and are lost: {}", lines_.size(),
                            storage_name_, last_error_);
            }
        } catch (...) {
            // A destructor must not throw; write() already logged what it could.
        }
    }

    JsonlSink(const JsonlSink&) = delete;
    JsonlSink& operator=(const JsonlSink&) = delete;

    void publish(const sightline::Event& event) override {
        std::string line = to_line(event);
        line += '\n';
        bool notify = false;
        {
            std::lock_guard lock(mutex_);
            if (lines_.size() >= max_buffered_) {
                std::string why = failing_ ? "storage '" + storage_name_ + "' is failing (last error: " + last_error_ + ")"
                                           : "storage '" + storage_name_ + "' has not taken them yet";
                throw Error(ErrorCode::resource_exhausted,
                            "sink-jsonl: " + std::to_string(lines_.size()) + " lines are buffered (max_buffered) because " +
                                why + "; the result of request '" + event.result.request_id + "' was not recorded");
            }
            lines_.push_back({Clock::now(), std::move(line)});
            buffered_->set(static_cast<double>(lines_.size()));
            notify = !failing_ && (lines_.size() == 1 || lines_.size() >= roll_every_);
        }
        if (notify) wake_.notify_one();
    }

    void flush() override {
        if (!write(true)) {
            std::lock_guard lock(mutex_);
            throw Error(ErrorCode::unavailable, "sink-jsonl: " + std::to_string(lines_.size()) +
                                                    " lines could not be written to storage '" + storage_name_ +
                                                    "' (" + last_error_ + "); they stay buffered and are retried");
        }
    }

private:
    struct Line {
        Clock::time_point arrived;
        std::string text;  // with its '\n'
    };
    struct Batch {
        std::string key;
        std::size_t count;
    };

    bool interval_due_locked(Clock::time_point now) const {
        return !lines_.empty() && lines_.front().arrived + roll_interval_ <= now;
    }

    std::string next_key_locked() {
        char seq[24];
        std::snprintf(seq, sizeof seq, "%06llu", static_cast<unsigned long long>(++sequence_));
        return prefix_ + compact_utc(std::chrono::system_clock::now()) + "-" + seq + "-" + instance_ + ".jsonl";
    }

    // Writes batches of at most roll_every lines, oldest first: only full batches, unless `everything`
    // or the interval is due. A batch whose put failed is retried first, under the same key, so a put
    // that did land after all is overwritten rather than duplicated. Returns false if a put failed.
    // Never throws.
    bool write(bool everything) {
        std::lock_guard write_lock(write_mutex_);
        while (true) {
            Batch batch;
            std::string payload;
            {
                std::lock_guard lock(mutex_);
                if (lines_.empty()) return true;
                const bool all = everything || interval_due_locked(Clock::now());
                if (!pending_ && !all && lines_.size() < roll_every_) return true;
                if (!pending_) pending_ = Batch{next_key_locked(), std::min(roll_every_, lines_.size())};
                batch = *pending_;
                std::size_t bytes = 0;
                for (std::size_t i = 0; i < batch.count; ++i) bytes += lines_[i].text.size();
                payload.reserve(bytes);
                for (std::size_t i = 0; i < batch.count; ++i) payload += lines_[i].text;
            }
            std::string error;
            try {
                storage_->put(batch.key, std::span(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()));
            } catch (const std::exception& e) {
                error = e.what();
            } catch (...) {
                error = "unknown exception";
            }
            std::lock_guard lock(mutex_);
            if (!error.empty()) {
                failing_ = true;
                last_error_ = error;
                next_retry_ = Clock::now() + roll_interval_;
                write_failures_->inc();
                log_->error("could not write {} result lines to storage '{}' as '{}' (kept, {} buffered; retry in {} ms): {}",
                            batch.count, storage_name_, batch.key, lines_.size(), roll_interval_.count(), error);
                return false;
            }
            if (failing_) log_->info("storage '{}' takes writes again", storage_name_);
            failing_ = false;
            pending_.reset();
            lines_.erase(lines_.begin(), lines_.begin() + static_cast<std::ptrdiff_t>(batch.count));
            buffered_->set(static_cast<double>(lines_.size()));
            lines_written_->inc(static_cast<double>(batch.count));
            objects_written_->inc();
        }
    }

    // The background writer: full batches as soon as they are full, the rest when the oldest line is
    // roll_interval old, and after a failure one roll_interval later.
    void run() {
        try {
            std::unique_lock lock(mutex_);
            while (!stop_) {
                const auto now = Clock::now();
                bool due = false;
                auto wake = Clock::time_point::max();
                if (!lines_.empty()) {
                    if (failing_) {
                        due = now >= next_retry_;
                        wake = next_retry_;
                    } else {
                        due = lines_.size() >= roll_every_ || interval_due_locked(now);
                        wake = lines_.front().arrived + roll_interval_;
                    }
                }
                if (due) {
                    lock.unlock();
                    write(false);
                    lock.lock();
                } else if (wake == Clock::time_point::max()) {
                    wake_.wait(lock);
                } else {
                    wake_.wait_until(lock, wake);
                }
            }
        } catch (...) {
            // Nothing here should throw (write() catches everything); never let the thread take the
            // process down. flush() and the destructor still write what is buffered.
        }
    }

    std::shared_ptr<spdlog::logger> log_;
    std::string storage_name_;
    std::string prefix_;
    std::size_t roll_every_;
    std::chrono::milliseconds roll_interval_;
    std::size_t max_buffered_;
    std::shared_ptr<sightline::Storage> storage_;
    std::string instance_;  // random, so objects of several processes never collide
    sightline::Counter* write_failures_ = nullptr;
    sightline::Counter* lines_written_ = nullptr;
    sightline::Counter* objects_written_ = nullptr;
    sightline::Gauge* buffered_ = nullptr;

    std::mutex write_mutex_;  // one put at a time, in order; taken before mutex_
    std::mutex mutex_;        // everything below
    std::condition_variable wake_;
    std::deque<Line> lines_;
    std::optional<Batch> pending_;  // the batch being written, or whose put failed
    std::uint64_t sequence_ = 0;
    bool failing_ = false;
    std::string last_error_;
    Clock::time_point next_retry_{};
    bool stop_ = false;
    std::thread writer_;  // last: starts after everything above exists
};

}  // namespace

SIGHTLINE_PLUGIN(sink, "jsonl", JsonlSink)
