#pragma once
#include <spdlog/logger.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/gallery.hpp"
#include "sightline/host/metrics_registry.hpp"
#include "sightline/host/pipeline.hpp"
#include "sightline/host/plugin_registry.hpp"
#include "sightline/host/worker_pool.hpp"

#include <sightline/sink.hpp>
#include <sightline/transport.hpp>

namespace sightline::host {

struct Limits {
    std::uint64_t max_body_bytes = 20'000'000;
    std::uint64_t max_pixels = 50'000'000;
    std::size_t queue = 64;
    std::chrono::milliseconds request_timeout{5000};
    std::size_t workers = 0;  // 0: one per core
    std::chrono::milliseconds results_ttl{600000};     // queue-and-poll results are kept this long
    std::chrono::milliseconds shutdown_timeout{10000};  // serve drains in-flight work for at most this
};

// Every error in a config, each with file:line, or empty. Loads plugins to read their schemas but
// constructs nothing.
std::vector<std::string> check_config(const LoadedConfig& config, const PluginRegistry& registry);

// The plugin search path: plugins.paths from the config, then `fallback` (the directory next to the
// executable), so the embedded default works from any working directory.
std::vector<std::filesystem::path> plugin_paths(const LoadedConfig& config,
                                                const std::vector<std::filesystem::path>& fallback);

// The running system built from a config: plugin registry, storages, gallery, pipelines, workers.
// Members are declared so that destruction runs in the required order: workers stop, pipelines and
// plugin objects go, and the registry (the libraries) goes last.
struct HostOptions {
    // false: pipelines get no index and no transports or sinks are built; what `sightline vocab
    // train` needs (the extractor and the storages) when the index cannot exist yet, since it needs
    // the vocabulary being trained.
    bool indexes = true;
};

class Host {
public:
    Host(LoadedConfig config, std::vector<std::filesystem::path> fallback_plugin_paths = {}, HostOptions options = {});
    ~Host();

    PluginRegistry& registry() { return *registry_; }
    MetricsRegistry& metrics() { return metrics_; }
    Gallery& gallery() { return *gallery_; }
    WorkerPool& workers() { return *workers_; }
    const Limits& limits() const { return limits_; }
    const LoadedConfig& config() const { return config_; }
    std::shared_ptr<Storage> storage(const std::string& name) const;

    Pipeline& pipeline(const std::string& name = {});
    std::vector<std::string> pipeline_names() const;
    const std::string& default_pipeline() const { return default_pipeline_; }

    // The configured transports and sinks, built but not started.
    const std::vector<std::shared_ptr<Transport>>& transports() const { return transports_; }
    struct NamedSink {
        std::string name;  // "sinks[0] (sink-jsonl)"
        std::shared_ptr<ResultSink> sink;
    };
    const std::vector<NamedSink>& sinks() const { return sinks_; }

    // Fills every pipeline's index from the gallery (records where valid, extraction otherwise).
    void load_gallery(const Pipeline::Progress& progress = {});
    // Snapshots every pipeline's index as of the gallery's journal head, then drops the journal
    // up to it. Only while no change is in flight (start-up, shutdown, end of an ingest).
    void save_snapshots();

private:
    LoadedConfig config_;
    std::unique_ptr<PluginRegistry> registry_;
    MetricsRegistry metrics_;
    Limits limits_;
    std::map<std::string, std::shared_ptr<Storage>> storages_;
    std::unique_ptr<Gallery> gallery_;
    std::map<std::string, std::unique_ptr<Pipeline>> pipelines_;
    std::string default_pipeline_;
    std::optional<std::uint64_t> snapshot_head_;  // journal position of the snapshots on disk
    std::vector<NamedSink> sinks_;
    std::unique_ptr<WorkerPool> workers_;
    std::vector<std::shared_ptr<Transport>> transports_;  // declared last: destroyed (stopped) first
};

// A logger that writes where the default logger does, at the level set with apply_log_level.
std::shared_ptr<spdlog::logger> make_logger(const std::string& name);
// Sets logging.level (info when absent) on every logger, and on every one made later; an invalid
// level is left to check_config to report.
void apply_log_level(const LoadedConfig& config);

}  // namespace sightline::host
