// sightline-bench-recognition — shared types of the recognition benchmark.
//
// The benchmark builds a gallery from image directories, makes queries with known answers
// (synthetic phone photos from bench/synth, or a labelled set of real photos), sends them through
// a driver (in-process HostService, or a `sightline serve` child over HTTP) and prints one JSON
// object with accuracy, latency, throughput and memory. See docs/bench.md.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bench_common.hpp"

namespace sightline::bench {

// ConfigOptions (bench_common.hpp): config_file, overrides, plugin_dirs, keep_sinks, log_level.
struct Options : ConfigOptions {
    // inputs
    std::vector<std::string> gallery_dirs;
    std::vector<std::string> exclude_dirs{"queries"};  // directory names skipped while scanning
    std::size_t max_items = 0;                          // 0: all
    std::string set_dir;
    std::vector<std::string> negatives_from;
    std::optional<std::size_t> negatives;  // unset: positives / 5
    std::optional<std::size_t> holdout;    // unset: derived from negatives
    std::size_t queries = 100;
    std::uint64_t seed = 1;
    int photo_width = 1024, photo_height = 768;
    synth::Ranges ranges;
    std::size_t backgrounds = 0;  // size of the clutter background pool; 0: up to 32 (~256 MB)
    // drivers
    bool http = false;
    std::size_t concurrency = 2;
    std::string sightline_bin;
    double ready_timeout_s = 600;
    // outputs and limits
    std::string mistakes_csv;
    std::string save_queries_dir;
    double max_seconds = 1800;
    bool keep_temp = false;
    bool pretty = false;
};

// Set by SIGINT/SIGTERM: the run stops early and still reports (a second signal kills).
extern std::atomic<bool> g_interrupted;
// The server child of the HTTP driver (0: none); the watchdog kills it before giving up.
extern std::atomic<long> g_child_pid;

// A global wall-clock budget (--max-seconds): loops ask expired() and stop early; the report then
// says "truncated". A watchdog in main ends the process if something hangs well past it.
class Budget {
public:
    explicit Budget(double seconds)
        : end_(Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds))) {}
    bool expired() const {
        if (Clock::now() < end_ && !g_interrupted.load()) return false;
        hit_.store(true);
        return true;
    }
    bool was_hit() const { return hit_.load(); }
    Clock::time_point end() const { return end_; }

private:
    Clock::time_point end_;
    mutable std::atomic<bool> hit_{false};
};

struct GalleryEntry {
    std::string id;
    fs::path file;
    std::string metadata = "{}";  // from a sidecar <stem>.json when present
};

struct IngestStats {
    std::size_t attempted = 0, stored = 0, failed = 0;
    double seconds = 0;
    std::vector<std::pair<std::string, std::string>> failures;  // id, reason
};

// One way of reaching the recognizer. recognize() is called from `concurrency` client threads at
// once; `client` (0 .. concurrency-1) lets a driver keep per-thread state.
class Driver {
public:
    virtual ~Driver() = default;
    virtual std::string name() const = 0;
    virtual IngestStats ingest(const std::vector<GalleryEntry>& items, const Budget& budget) = 0;
    virtual Outcome recognize(const QueryCase& query, std::size_t client) = 0;
    virtual nlohmann::json config_summary() = 0;
    // Peak resident set size of whatever does the recognition, in bytes (VmHWM).
    virtual std::optional<std::uint64_t> peak_rss_bytes() = 0;
    virtual std::string peak_rss_of() const = 0;
    virtual std::size_t gallery_size() = 0;
    virtual void stop() {}
};

// Helpers, config loading, ids, image scanning, query synthesis and statistics are shared with
// the other benchmarks: bench/common/bench_common.hpp.

// ---- dataset (dataset.cpp)

struct Dataset {
    std::vector<GalleryEntry> gallery;
    std::vector<QueryCase> queries;
    std::vector<fs::path> held_out;  // gallery-dir images kept out of the gallery as negatives
    std::string source;              // "synthetic" or "set"
    std::size_t set_skipped = 0;     // set queries not usable (missing file, unknown id)
    std::size_t backgrounds = 0;     // distinct clutter backgrounds used by synthetic queries
};

Dataset build_dataset(const Options& o, const Budget& budget);
void save_queries(const Dataset& d, const fs::path& dir);

// ---- drivers

std::unique_ptr<Driver> make_inprocess_driver(const Options& o);
std::unique_ptr<Driver> make_http_driver(const Options& o);
bool http_driver_available();

// ---- report (report.cpp)

struct RunResult {
    std::vector<Outcome> outcomes;  // parallel to Dataset::queries
    double seconds = 0;             // wall time of the query phase
    std::size_t sent = 0;
};

nlohmann::json make_report(const Options& o, const Dataset& d, Driver& driver, const IngestStats& ingest,
                           const RunResult& run, double total_seconds, bool truncated);
void write_mistakes(const fs::path& file, const Dataset& d, const RunResult& run);

}  // namespace sightline::bench
