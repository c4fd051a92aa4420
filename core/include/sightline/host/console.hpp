#pragma once
#include <sightline/storage.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <mutex>
#include <string>

namespace sightline::host {

// A one-line progress bar on stderr for long work (ingest, gallery loading, benchmarks): redrawn at
// most ten times a second on a terminal; on a log or CI, a plain line per 10% (none closer than
// 5 s) plus the final one, printed once. Thread-safe.
class ProgressBar {
public:
    ProgressBar(std::string label, std::size_t total);
    void update(std::size_t done);
    void tick() { update(++count_); }  // one more done, for callers that do not count themselves

private:
    using Clock = std::chrono::steady_clock;
    std::string label_;
    std::size_t total_;
    bool tty_;
    Clock::time_point start_, drawn_{};
    std::size_t decile_ = 0;
    std::atomic<std::size_t> count_{0};
    std::mutex mutex_;
};

// jpg, jpeg, png, webp, bmp, by extension (any case).
bool is_image_file(const std::filesystem::path& p);

// The whole file. Throws Error: not_found when it cannot be read, resource_exhausted when it is
// larger than max_bytes.
Bytes read_file(const std::filesystem::path& p,
                std::uint64_t max_bytes = std::numeric_limits<std::uint64_t>::max());

}  // namespace sightline::host
