// sightline benchmarks — pieces shared by sightline-bench-recognition and sightline-bench-scale:
// config loading (--config / --set, the build's plugins), image scanning and ids, synthetic
// phone-photo queries (bench/synth), latency statistics, /proc memory figures. See docs/bench.md.
#pragma once

#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/console.hpp"
#include "sightline/synth/synth.hpp"

namespace sightline::host {
class Host;
}

namespace sightline::bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Bytes = std::vector<std::uint8_t>;

// Thrown for bad command lines and unusable inputs: main prints the message and exits with 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---- helpers (util.cpp)

using host::is_image_file;
using host::read_file;
using Progress = host::ProgressBar;

void note(const std::string& line);  // a progress line on stderr
// The host's loggers are clones of spdlog's default logger, which writes to stdout; a benchmark's
// stdout is its JSON, so the default logger is made a stderr one (as the CLI does).
void log_to_stderr(const std::string& name);
// A "<field>:  N kB" line of /proc/<pid>/status in bytes (VmHWM, VmRSS ...); pid 0: self.
std::optional<std::uint64_t> proc_status_bytes(const char* field, long pid = 0);
inline std::optional<std::uint64_t> vm_hwm_bytes(long pid) { return proc_status_bytes("VmHWM", pid); }
std::string content_type_for(const fs::path& p);
fs::path exe_dir();
fs::path make_temp_dir(const std::string& prefix);

// Seeded Fisher-Yates shuffle (cv::RNG: the same order on every platform).
template <class T> void shuffle(std::vector<T>& v, cv::RNG& rng) {
    for (int i = static_cast<int>(v.size()) - 1; i > 0; --i)
        std::swap(v[static_cast<std::size_t>(i)], v[static_cast<std::size_t>(rng.uniform(0, i + 1))]);
}

// Runs fn(0..n-1) on `threads` threads (0: one per core); stops taking new indexes once stop() is true.
template <class F, class Stop> void parallel_for(std::size_t n, Stop stop, F fn, std::size_t threads = 0) {
    std::atomic<std::size_t> next{0};
    auto work = [&] {
        for (std::size_t i; (i = next++) < n && !stop();) fn(i);
    };
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    threads = std::min(n, threads);
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
}

// ---- config (config.cpp)

// The command-line inputs that make the host's config, the same in every benchmark.
struct ConfigOptions {
    std::string config_file;
    std::vector<std::string> overrides;
    std::vector<std::string> plugin_dirs;
    bool keep_sinks = false;
    std::string log_level = "warn";
};

// --config FILE (else ./config/default.yaml, else the built-in default), then logging.level, every
// --set, the bench's own plugin directories and sinks=[]; the gallery storage must be local.
host::LoadedConfig load_bench_config(const ConfigOptions& o);
std::vector<fs::path> plugin_dirs(const ConfigOptions& o);
// The pipeline the host will use: default_pipeline, else the alphabetically first.
std::string default_pipeline_name(const host::LoadedConfig& c);
// The gallery storage's name (gallery.storage, default "gallery").
std::string gallery_storage_name(const host::LoadedConfig& c);
nlohmann::json yaml_to_json(const YAML::Node& n);
// features/index sections merged with the plugins' schema defaults, verify and sizes from the
// YAML merged with the core defaults.
nlohmann::json summarize_config(const host::LoadedConfig& c, const std::vector<fs::path>& plugins);
// summarize_config plus what the running host's default pipeline actually uses: its name, feature
// signature, sizes, verify thresholds, and the host's worker count.
nlohmann::json summarize_pipeline(const host::LoadedConfig& c, const std::vector<fs::path>& plugins, host::Host& h);

// ---- images and ids (images.cpp)

constexpr std::uint64_t kMaxImageBytes = 64ull << 20;  // larger files are skipped

std::string sanitize_id(const std::string& stem);
// Assigns unique ids; `taken` holds ids already in use (they are never reused).
std::string unique_id(const std::string& stem, std::map<std::string, int>& taken);
// Image files under `dirs` (recursive, symlinks resolved once each), sorted; directories whose name
// is in `exclude` are skipped.
std::vector<fs::path> scan_images(const std::vector<std::string>& dirs, const std::vector<std::string>& exclude);
// A sidecar <stem>.json next to the image as compact JSON, else "{}".
std::string read_metadata(const fs::path& image);
bool same_content(const fs::path& a, const fs::path& b);
// The item image for rendering: BGR, EXIF orientation applied (as the pipeline decodes it), and
// shrunk when much larger than the photo (warping a huge image down aliases and costs time).
cv::Mat load_item(const fs::path& file, cv::Size photo);

// ---- synthetic queries (queries.cpp)

struct SynthInfo {
    synth::Warp warp;
    synth::Degrade degrade;
    bool cut_off = false;  // part of the item lies outside the photo
    // The item's corners (0,0), (w,0), (w,h), (0,h) in photo pixels, w x h being the item as
    // rendered (the source image, reduced to fit the photo when larger).
    std::array<cv::Point2f, 4> corners{};
    cv::Size item_size;
};

struct QueryCase {
    std::string name;   // file name (query-0001.jpg, or the set's file name)
    std::string truth;  // gallery id; empty for a negative
    Bytes image;
    std::string content_type = "image/jpeg";
    fs::path source;  // the image the query shows
    std::optional<SynthInfo> synth;
    bool negative() const { return truth.empty(); }
};

struct QueryItem {
    std::string id;
    fs::path file;
};

struct QueryJob {
    fs::path file;
    std::string truth;  // empty: a negative
    std::uint64_t seed = 0;
};

// The query list: positives cycle through `items` in a seeded order (every item once per cycle),
// negatives through `pool`; then the two are interleaved in a seeded order.
std::vector<QueryJob> plan_queries(std::uint64_t seed, std::size_t positives, const std::vector<QueryItem>& items,
                                   std::size_t negatives, const std::vector<fs::path>& pool);

struct SynthQueries {
    std::vector<QueryCase> queries;  // named query-0001.jpg ...; jobs that failed are left out
    std::size_t backgrounds = 0;     // distinct clutter backgrounds used
    std::size_t failed = 0;          // jobs whose image could not be read
};

// Renders every job with bench/synth (ranges.photo_size is the photo size). A procedural
// background costs several times a render, so the queries share a seeded pool of
// `backgrounds` of them (0: as many as fit in ~256 MB, 4..32). Stops early when stop() is true.
SynthQueries synthesize_queries(const std::vector<QueryJob>& jobs, const synth::Ranges& ranges, std::uint64_t seed,
                                std::size_t backgrounds, const std::function<bool()>& stop);

// ---- answers (stats.cpp)

struct MatchLite {
    std::string id;
    double score = 0;
    int inliers = 0;
};

// One query's answer as a benchmark saw it.
struct Outcome {
    bool done = false;  // false: never sent (budget ran out, interrupted)
    std::vector<MatchLite> matches;
    std::map<std::string, double> timings_ms;
    double end_to_end_ms = 0;
    std::string error;  // "code: message"
};

enum class Kind { skipped, correct, wrong_id, missed, error, true_negative, false_positive };
const char* kind_name(Kind k);
Kind classify(const QueryCase& q, const Outcome& o);

// What a set of answers adds up to: answers per kind, and the latencies of those that came back.
struct Tally {
    std::map<Kind, std::size_t> count;
    std::size_t positives = 0, negatives = 0, found_any = 0, sent = 0;  // found_any: truth anywhere in the list
    std::map<std::string, std::vector<double>> stages;  // per pipeline stage, ms
    std::vector<double> e2e, search_verify;             // ms
};
Tally tally(const std::vector<QueryCase>& queries, const std::vector<Outcome>& outcomes);

// ---- statistics (stats.cpp)

double round_to(double v, int digits);
// Linear interpolation between closest ranks (numpy's default, "type 7"); `sorted` ascending.
double percentile(const std::vector<double>& sorted, double p);
// {p50, p95, p99, mean, max, n} in the values' unit, or null for none.
nlohmann::json latency(std::vector<double> v);
double ratio(std::size_t a, std::size_t b);  // a/b to 4 digits, 0 when b is 0
std::string csv(const std::string& s);       // a CSV field, quoted when needed
// The synthesis ranges as the reports print them.
nlohmann::json ranges_json(const synth::Ranges& r);

}  // namespace sightline::bench
