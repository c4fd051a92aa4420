#include "sightline/host/host.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <iterator>
#include <string_view>
#include <thread>

namespace fs = std::filesystem;

namespace sightline::host {

namespace {

// Host-owned sections are declared with the same schema type plugins use, and validated the same way.
const std::array<ConfigKey, 1> kPluginsKeys{{
    {.name = "paths", .type = ConfigType::string_list, .default_value = "build/plugins",
     .description = "directories searched for libsightline_*.so"},
}};
const std::array<ConfigKey, 4> kGalleryKeys{{
    {.name = "storage", .type = ConfigType::string, .required = true, .description = "name of a storage under storages:"},
    {.name = "images", .type = ConfigType::string, .default_value = "images/", .description = "key prefix of images and metadata"},
    {.name = "features", .type = ConfigType::string, .default_value = "features/", .description = "key prefix of feature records"},
    {.name = "snapshots", .type = ConfigType::boolean, .default_value = "true",
     .description = "keep index snapshots in the storage: start-up loads one and replays the change journal after it "
                    "instead of reading every feature record"},
}};
const std::array<ConfigKey, 7> kLimitsKeys{{
    {.name = "max_body_bytes", .type = ConfigType::bytes, .default_value = "20MB", .min = 1,
     .description = "largest image accepted, in bytes"},
    {.name = "max_pixels", .type = ConfigType::bytes, .default_value = "50M", .min = 1,
     .description = "largest image accepted, in pixels (read from the header before decoding)"},
    {.name = "queue", .type = ConfigType::integer, .default_value = "64", .min = 1, .max = 1e6,
     .description = "requests waiting for a worker before new ones are refused"},
    {.name = "request_timeout", .type = ConfigType::duration, .default_value = "5s", .min = 1,
     .description = "a request still unanswered after this fails with deadline_exceeded"},
    {.name = "workers", .type = ConfigType::integer, .default_value = "0", .min = 0, .max = 1024,
     .description = "worker threads (0: one per core)"},
    {.name = "results_ttl", .type = ConfigType::duration, .default_value = "10m", .min = 1,
     .description = "how long results of queued requests (POST /v1/requests) stay available"},
    {.name = "shutdown_timeout", .type = ConfigType::duration, .default_value = "10s", .min = 0,
     .description = "on SIGTERM/SIGINT, in-flight requests get this long to finish"},
}};
const std::array<ConfigKey, 7> kPipelineKeys{{
    {.name = "working_size", .type = ConfigType::integer, .default_value = "800", .min = 64, .max = 8192,
     .description = "query images are scaled so their long side is at most this before extraction"},
    {.name = "gallery_size", .type = ConfigType::integer, .default_value = "480", .min = 64, .max = 8192,
     .description = "reference images are scaled so their long side is at most this before extraction; "
                    "smaller than working_size because an object usually fills only part of a photo"},
    {.name = "max_upscale", .type = ConfigType::number, .default_value = "1", .min = 1, .max = 4,
     .description = "a query smaller than working_size is enlarged towards it by at most this factor, so "
                    "detail finer than the detector's smallest scale is found (1: never enlarged)"},
    {.name = "max_matches", .type = ConfigType::integer, .default_value = "5", .min = 1, .max = 100,
     .description = "verified objects listed per result"},
    {.name = "search_features", .type = ConfigType::integer, .default_value = "0", .min = 0, .max = 1e6,
     .description = "only the N strongest query features go to the index search (0: all); verification "
                    "still uses every query feature"},
    {.name = "search_grid", .type = ConfigType::integer, .default_value = "1", .min = 1, .max = 64,
     .description = "with search_features, send the strongest per cell of a grid x grid layout of the photo, "
                    "so a busy background cannot take the whole search budget (1: strongest overall)"},
    {.name = "clahe", .type = ConfigType::number, .default_value = "0", .min = 0, .max = 40,
     .description = "CLAHE clip limit for local contrast equalisation before extraction (0: off)"},
}};
const std::array<ConfigKey, 17> kVerifyKeys{{
    {.name = "candidates", .type = ConfigType::integer, .default_value = "8", .min = 1, .max = 1000,
     .description = "index candidates checked by RANSAC"},
    {.name = "min_inliers", .type = ConfigType::integer, .default_value = "15", .min = 4, .max = 100000,
     .description = "a match needs at least this many homography inliers"},
    {.name = "min_inlier_ratio", .type = ConfigType::number, .default_value = "0.2", .min = 0, .max = 1,
     .description = "... and this share of the candidate's correspondences"},
    {.name = "reprojection_error", .type = ConfigType::number, .default_value = "5", .min = 0.5, .max = 100,
     .description = "RANSAC inlier threshold in working-size pixels"},
    {.name = "min_area", .type = ConfigType::number, .default_value = "0.002", .min = 0, .max = 1,
     .description = "smallest outline accepted, as a share of the query image"},
    {.name = "min_inlier_area", .type = ConfigType::number, .default_value = "0", .min = 0, .max = 1,
     .description = "the inliers' convex hull must cover at least this share of the reference image (0: off); "
                    "refuses homographies fitted to one small patch of repeated structure"},
    {.name = "max_scale_change", .type = ConfigType::number, .default_value = "8", .min = 1,
     .description = "largest size change between reference and outline, either way"},
    {.name = "max_aspect_change", .type = ConfigType::number, .default_value = "4", .min = 1,
     .description = "largest aspect-ratio change of the outline, either way"},
    {.name = "max_side_ratio", .type = ConfigType::number, .default_value = "5", .min = 1,
     .description = "largest ratio of opposite outline sides (perspective foreshortening)"},
    {.name = "rematch", .type = ConfigType::boolean, .default_value = "true",
     .description = "match the query again against each candidate's own features before RANSAC "
                    "(keeps reference features in memory a second time)"},
    {.name = "rematch_ratio", .type = ConfigType::number, .default_value = "0.8", .min = 0.1, .max = 1,
     .description = "Lowe's ratio for the per-candidate matching"},
    {.name = "estimator", .type = ConfigType::string, .default_value = "usac", .choices = "usac|magsac|ransac",
     .description = "homography estimation: OpenCV's USAC (local optimisation, degeneracy checks), USAC with "
                    "MAGSAC++ scoring, or classic RANSAC"},
    {.name = "rectify_min_inliers", .type = ConfigType::integer, .default_value = "0", .min = 0, .max = 100000,
     .description = "a candidate with at least this many inliers, but fewer than min_inliers, is looked at "
                    "again in the photo warped into its reference's frame (0: never)"},
    {.name = "rectify_radius", .type = ConfigType::number, .default_value = "6", .min = 0.5, .max = 100,
     .description = "in that second look, a feature matches only within this many reference pixels of its partner"},
    {.name = "rectify_candidates", .type = ConfigType::integer, .default_value = "0", .min = 0, .max = 100000,
     .description = "only the N best-ranked candidates get the second look, each of which costs a feature "
                    "extraction (0: every candidate)"},
    {.name = "rectify_after_match", .type = ConfigType::boolean, .default_value = "false",
     .description = "second looks go on after a candidate has matched (finds a blurred object beside a clear one, "
                    "for an extraction per weak candidate); false: they stop at the first match"},
    {.name = "confirm", .type = ConfigType::boolean, .default_value = "false",
     .description = "with rematch off, a candidate's fit is confirmed against its reference's own descriptors, "
                    "read from its feature record: inliers must pass the ratio test there, second looks match them"},
}};
const std::array<ConfigKey, 2> kLoggingKeys{{
    {.name = "level", .type = ConfigType::string, .default_value = "info", .choices = "trace|debug|info|warn|error|off",
     .description = "log level"},
    {.name = "format", .type = ConfigType::string, .default_value = "text", .choices = "text",
     .description = "log line format"},
}};
const std::vector<std::string> kTopLevel{"plugins",    "storages", "pipelines", "gallery", "limits",
                                         "logging",    "default_pipeline", "transports", "sinks", "experiment"};

Config section(const LoadedConfig& c, const YAML::Node& node, const std::string& path, ConfigSchema schema) {
    return Config(node.IsDefined() ? node : YAML::Node(YAML::NodeType::Map), c.file, path, schema);
}

// Validates {type: NAME, ...keys} against the named plugin's schema.
void check_plugin_section(const LoadedConfig& c, const PluginRegistry& registry, PluginKind kind,
                          const YAML::Node& node, const std::string& path, std::vector<std::string>& errors) {
    if (!node.IsDefined() || !node.IsMap()) {
        errors.push_back(where(c.file, node) + ": " + path + ": expected a mapping with a 'type' key");
        return;
    }
    if (!node["type"] || !node["type"].IsScalar()) {
        errors.push_back(where(c.file, node) + ": " + path + ".type: required key is missing (which " +
                         to_string(kind) + " plugin?)");
        return;
    }
    try {
        const auto& plugin = registry.get(kind, node["type"].Scalar());
        validate_section(node, plugin.schema(), c.file, path, {"type"}, errors);
    } catch (const Error& e) {
        errors.push_back(where(c.file, node["type"]) + ": " + path + ".type: " + e.what());
    }
}

class HostContext final : public Context {
public:
    HostContext(Config config, std::shared_ptr<spdlog::logger> logger, Metrics& metrics,
                const std::map<std::string, std::shared_ptr<Storage>>& storages, std::string features_signature = {},
                std::string descriptor_signature = {})
        : config_(std::move(config)),
          logger_(std::move(logger)),
          metrics_(metrics),
          storages_(storages),
          features_signature_(std::move(features_signature)),
          descriptor_signature_(std::move(descriptor_signature)) {}
    std::string features_signature() const override { return features_signature_; }
    std::string features_descriptor_signature() const override { return descriptor_signature_; }
    const Config& config() const override { return config_; }
    std::shared_ptr<spdlog::logger> logger() const override { return logger_; }
    Metrics& metrics() const override { return metrics_; }
    std::shared_ptr<Storage> storage(const std::string& name) const override {
        auto it = storages_.find(name);
        if (it != storages_.end()) return it->second;
        std::string names;
        for (const auto& [n, _] : storages_) names += (names.empty() ? "" : ", ") + n;
        throw Error(ErrorCode::not_found, "no storage named '" + name + "' (configured: " +
                                              (names.empty() ? "none" : names) + ")");
    }

private:
    Config config_;
    std::shared_ptr<spdlog::logger> logger_;
    Metrics& metrics_;
    const std::map<std::string, std::shared_ptr<Storage>>& storages_;
    std::string features_signature_;
    std::string descriptor_signature_;
};

template <PluginKind K>
std::shared_ptr<kind_base_t<K>> make_plugin(const LoadedConfig& c, const PluginRegistry& registry, const YAML::Node& node,
                                            const std::string& path, Metrics& metrics,
                                            const std::map<std::string, std::shared_ptr<Storage>>& storages,
                                            std::string features_signature = {}, std::string descriptor_signature = {}) {
    const auto& plugin = registry.get(K, node["type"].Scalar());
    HostContext ctx(Config(node, c.file, path, plugin.schema()), make_logger(plugin.full_name()), metrics, storages,
                    std::move(features_signature), std::move(descriptor_signature));
    try {
        return registry.create<K>(plugin, ctx);
    } catch (const Error& e) {
        throw Error(e.code(), path + " (" + plugin.full_name() + "): " + e.what());
    }
}

}  // namespace

std::shared_ptr<spdlog::logger> make_logger(const std::string& name) {
    if (auto existing = spdlog::get(name)) return existing;
    auto logger = spdlog::default_logger()->clone(name);
    try {
        spdlog::register_logger(logger);
    } catch (const spdlog::spdlog_ex&) {
        return spdlog::get(name);  // registered by another thread meanwhile
    }
    return logger;
}

std::vector<fs::path> plugin_paths(const LoadedConfig& config, const std::vector<fs::path>& fallback) {
    std::vector<fs::path> paths;
    for (const auto& p : section(config, config.root["plugins"], "plugins", kPluginsKeys).get_strings("paths"))
        paths.emplace_back(p);
    for (const auto& p : fallback)
        if (std::find(paths.begin(), paths.end(), p) == paths.end()) paths.push_back(p);
    return paths;
}

std::vector<std::string> check_config(const LoadedConfig& c, const PluginRegistry& registry) {
    std::vector<std::string> errors;
    const YAML::Node& root = c.root;
    validate_section(root, {}, c.file, "<top level>", kTopLevel, errors);
    validate_section(root["plugins"], kPluginsKeys, c.file, "plugins", {}, errors);
    validate_section(root["limits"], kLimitsKeys, c.file, "limits", {}, errors);
    validate_section(root["logging"], kLoggingKeys, c.file, "logging", {}, errors);

    std::vector<std::string> storage_names;
    if (root["storages"]) {
        if (!root["storages"].IsMap()) errors.push_back(where(c.file, root["storages"]) + ": storages: expected a mapping of name: {type: ...}");
        else
            for (auto it = root["storages"].begin(); it != root["storages"].end(); ++it) {
                storage_names.push_back(it->first.Scalar());
                check_plugin_section(c, registry, PluginKind::storage, it->second, "storages." + it->first.Scalar(), errors);
            }
    }
    if (!root["gallery"]) {
        errors.push_back(c.file + ": gallery: required section is missing (gallery: {storage: NAME})");
    } else {
        validate_section(root["gallery"], kGalleryKeys, c.file, "gallery", {}, errors);
        if (root["gallery"]["storage"] && root["gallery"]["storage"].IsScalar()) {
            std::string s = root["gallery"]["storage"].Scalar();
            if (std::find(storage_names.begin(), storage_names.end(), s) == storage_names.end()) {
                std::string msg = where(c.file, root["gallery"]["storage"]) + ": gallery.storage: no storage named '" + s + "'";
                if (auto g = did_you_mean(s, storage_names); !g.empty()) msg += "; did you mean '" + g + "'?";
                errors.push_back(msg);
            }
        }
    }
    std::vector<std::string> pipeline_names;
    const YAML::Node& pipelines = root["pipelines"];
    if (!pipelines || !pipelines.IsMap() || pipelines.size() == 0) {
        errors.push_back(where(c.file, pipelines) + ": pipelines: at least one pipeline is required "
                         "(pipelines: {NAME: {features: {type: ...}, index: {type: ...}}})");
    } else {
        for (auto it = pipelines.begin(); it != pipelines.end(); ++it) {
            std::string path = "pipelines." + it->first.Scalar();
            pipeline_names.push_back(it->first.Scalar());
            const YAML::Node& p = it->second;
            validate_section(p, kPipelineKeys, c.file, path, {"features", "query_features", "index", "verify"}, errors);
            if (!p.IsMap()) continue;
            check_plugin_section(c, registry, PluginKind::features, p["features"], path + ".features", errors);
            if (p["query_features"]) {
                if (!p["query_features"].IsMap()) {
                    errors.push_back(where(c.file, p["query_features"]) + ": " + path +
                                     ".query_features: expected a mapping of feature keys");
                } else if (p["features"].IsMap() && p["features"]["type"]) {
                    try {
                        const auto& plugin = registry.get(PluginKind::features, p["features"]["type"].Scalar());
                        // The plugin's keys, none required (they come from `features`); `type` is
                        // not among them: the plugin cannot change.
                        std::vector<ConfigKey> optional(plugin.schema().begin(), plugin.schema().end());
                        for (auto& k : optional) k.required = false;
                        validate_section(p["query_features"], optional, c.file, path + ".query_features", {}, errors);
                    } catch (const Error&) {  // already reported for .features
                    }
                }
            }
            check_plugin_section(c, registry, PluginKind::index, p["index"], path + ".index", errors);
            if (p["verify"]) {
                const std::size_t before = errors.size();
                validate_section(p["verify"], kVerifyKeys, c.file, path + ".verify", {}, errors);
                const auto vs = section(c, p["verify"], path + ".verify", kVerifyKeys);
                if (errors.size() == before) {
                    const auto second = vs.get_int("rectify_min_inliers"), least = vs.get_int("min_inliers");
                    if (second > 0 && second >= least)
                        errors.push_back(vs.where("rectify_min_inliers") + ": " + vs.key_path("rectify_min_inliers") +
                                         ": " + std::to_string(second) + " must be below min_inliers (" +
                                         std::to_string(least) + "), or 0 for no second look");
                }
            }
        }
    }
    if (root["default_pipeline"]) {
        std::string d = root["default_pipeline"].Scalar();
        if (std::find(pipeline_names.begin(), pipeline_names.end(), d) == pipeline_names.end())
            errors.push_back(where(c.file, root["default_pipeline"]) + ": default_pipeline: no pipeline named '" + d + "'");
    }
    for (const char* list : {"transports", "sinks"}) {
        const YAML::Node& n = root[list];
        if (!n) continue;
        if (!n.IsSequence()) {
            errors.push_back(where(c.file, n) + ": " + list + ": expected a list of {type: ...}");
            continue;
        }
        for (std::size_t i = 0; i < n.size(); ++i)
            check_plugin_section(c, registry, std::string(list) == "sinks" ? PluginKind::sink : PluginKind::transport,
                                 n[i], std::string(list) + "[" + std::to_string(i) + "]", errors);
    }
    return errors;
}

void apply_log_level(const LoadedConfig& config) {
    const YAML::Node& logging = config.root["logging"];
    std::string level = "info";
    if (logging.IsDefined() && logging.IsMap() && logging["level"] && logging["level"].IsScalar())
        level = logging["level"].Scalar();
    const std::string_view known[] = {"trace", "debug", "info", "warn", "error", "off"};
    if (std::find(std::begin(known), std::end(known), level) != std::end(known))
        spdlog::set_level(spdlog::level::from_str(level));
}

Host::Host(LoadedConfig config, std::vector<fs::path> fallback_plugin_paths, HostOptions options)
    : config_(std::move(config)) {
    // First: loading plugins may already log (the registry's warnings), and so may every factory.
    apply_log_level(config_);
    registry_ = std::make_unique<PluginRegistry>(plugin_paths(config_, fallback_plugin_paths));
    registry_->load_all();
    auto errors = check_config(config_, *registry_);
    if (!errors.empty()) {
        std::string msg = errors.size() == 1 ? errors[0] : std::to_string(errors.size()) + " problems in the config:";
        if (errors.size() > 1)
            for (const auto& e : errors) msg += "\n  " + e;
        throw Error(ErrorCode::invalid_argument, msg);
    }
    const YAML::Node& root = config_.root;

    auto limits = section(config_, root["limits"], "limits", kLimitsKeys);
    limits_.max_body_bytes = limits.get_bytes("max_body_bytes");
    limits_.max_pixels = limits.get_bytes("max_pixels");
    limits_.queue = static_cast<std::size_t>(limits.get_int("queue"));
    limits_.request_timeout = limits.get_duration("request_timeout");
    limits_.workers = static_cast<std::size_t>(limits.get_int("workers"));
    if (limits_.workers == 0) limits_.workers = std::max(1u, std::thread::hardware_concurrency());
    limits_.results_ttl = limits.get_duration("results_ttl");
    limits_.shutdown_timeout = limits.get_duration("shutdown_timeout");

    for (auto it = root["storages"].begin(); root["storages"] && it != root["storages"].end(); ++it) {
        std::string name = it->first.Scalar();
        storages_[name] = make_plugin<PluginKind::storage>(config_, *registry_, it->second, "storages." + name, metrics_,
                                                           storages_);
    }
    auto g = section(config_, root["gallery"], "gallery", kGalleryKeys);
    gallery_ = std::make_unique<Gallery>(storages_.at(g.get_string("storage")), g.get_string("images"),
                                         g.get_string("features"));

    for (auto it = root["pipelines"].begin(); it != root["pipelines"].end(); ++it) {
        std::string name = it->first.Scalar(), path = "pipelines." + name;
        const YAML::Node& p = it->second;
        auto ps = section(config_, p, path, kPipelineKeys);
        auto vs = section(config_, p["verify"], path + ".verify", kVerifyKeys);
        PipelineSettings s;
        s.working_size = static_cast<int>(ps.get_int("working_size"));
        s.gallery_size = static_cast<int>(ps.get_int("gallery_size"));
        s.max_upscale = ps.get_double("max_upscale");
        s.max_matches = static_cast<std::size_t>(ps.get_int("max_matches"));
        s.limits = {limits_.max_body_bytes, limits_.max_pixels};
        s.verify.candidates = static_cast<std::size_t>(vs.get_int("candidates"));
        s.verify.min_inliers = static_cast<int>(vs.get_int("min_inliers"));
        s.verify.min_inlier_ratio = vs.get_double("min_inlier_ratio");
        s.verify.reprojection_error = vs.get_double("reprojection_error");
        s.verify.min_area = vs.get_double("min_area");
        s.verify.min_inlier_area = vs.get_double("min_inlier_area");
        s.verify.max_scale_change = vs.get_double("max_scale_change");
        s.verify.max_aspect_change = vs.get_double("max_aspect_change");
        s.verify.max_side_ratio = vs.get_double("max_side_ratio");
        s.verify.rematch = vs.get_bool("rematch");
        s.verify.rematch_ratio = vs.get_double("rematch_ratio");
        const std::string estimator = vs.get_string("estimator");
        s.verify.estimator = estimator == "ransac"   ? Estimator::ransac
                             : estimator == "magsac" ? Estimator::magsac
                                                     : Estimator::usac;
        s.verify.rectify_min_inliers = static_cast<int>(vs.get_int("rectify_min_inliers"));
        s.verify.rectify_radius = vs.get_double("rectify_radius");
        s.verify.rectify_candidates = static_cast<std::size_t>(vs.get_int("rectify_candidates"));
        s.verify.rectify_after_match = vs.get_bool("rectify_after_match");
        s.verify.confirm = vs.get_bool("confirm");
        if (s.verify.confirm && s.verify.rematch)
            make_logger("host")->warn("{}.verify.confirm has no effect with rematch: true (the descriptors are in "
                                      "memory and every candidate is matched with them already)",
                                      path);
        auto extractor = make_plugin<PluginKind::features>(config_, *registry_, p["features"], path + ".features",
                                                           metrics_, storages_);
        // Queries may extract differently (typically more features: the object is only part of the
        // photo); same plugin, so descriptors stay comparable. Gallery records use `features` alone.
        std::shared_ptr<FeatureExtractor> query_extractor = extractor;
        if (p["query_features"] && p["query_features"].size() > 0) {
            YAML::Node merged = YAML::Clone(p["features"]);
            for (auto kv = p["query_features"].begin(); kv != p["query_features"].end(); ++kv)
                merged[kv->first.Scalar()] = kv->second;
            query_extractor = make_plugin<PluginKind::features>(config_, *registry_, merged, path + ".query_features",
                                                                metrics_, storages_);
        }
        s.search_features = static_cast<std::size_t>(ps.get_int("search_features"));
        s.search_grid = static_cast<int>(ps.get_int("search_grid"));
        s.snapshots = g.get_bool("snapshots");
        s.snapshot_tag = YAML::Dump(p);
        s.clahe_clip = ps.get_double("clahe");
        const std::string features_signature = extractor->signature();
        std::shared_ptr<Index> index;
        if (options.indexes)
            index = make_plugin<PluginKind::index>(config_, *registry_, p["index"], path + ".index", metrics_,
                                                   storages_, features_signature, extractor->descriptor_signature());
        pipelines_[name] = std::make_unique<Pipeline>(name, std::move(extractor), std::move(query_extractor),
                                                      std::move(index), s, make_logger("pipeline." + name), &metrics_);
        // verify.confirm reads the records this pipeline keeps in the gallery.
        pipelines_[name]->read_references_from(*gallery_);
    }
    default_pipeline_ = root["default_pipeline"] ? root["default_pipeline"].Scalar() : pipelines_.begin()->first;

    for (std::size_t i = 0; options.indexes && root["sinks"] && i < root["sinks"].size(); ++i) {
        std::string path = "sinks[" + std::to_string(i) + "]";
        auto sink = make_plugin<PluginKind::sink>(config_, *registry_, root["sinks"][i], path, metrics_, storages_);
        sinks_.push_back({path + " (sink-" + root["sinks"][i]["type"].Scalar() + ")", std::move(sink)});
    }
    WorkerPool::configure_opencv_threads(limits_.workers);
    workers_ = std::make_unique<WorkerPool>(limits_.workers, limits_.queue);
    for (std::size_t i = 0; options.indexes && root["transports"] && i < root["transports"].size(); ++i) {
        std::string path = "transports[" + std::to_string(i) + "]";
        transports_.push_back(
            make_plugin<PluginKind::transport>(config_, *registry_, root["transports"][i], path, metrics_, storages_));
    }
}

Host::~Host() {
    // Transports first (they call into everything), workers (they may be running pipeline code), then
    // plugin objects, then libraries.
    transports_.clear();
    workers_.reset();
    // Also on a way out by an exception: what a sink still buffers is written before it goes.
    // After a normal shutdown this flush finds nothing left.
    for (const auto& s : sinks_) {
        try {
            s.sink->flush();
        } catch (const std::exception& e) {
            make_logger("host")->error("{}: flush failed: {}", s.name, e.what());
        }
    }
    sinks_.clear();
    pipelines_.clear();
    gallery_.reset();
    storages_.clear();
    registry_.reset();
}

std::shared_ptr<Storage> Host::storage(const std::string& name) const {
    auto it = storages_.find(name);
    if (it == storages_.end()) throw Error(ErrorCode::not_found, "no storage named '" + name + "'");
    return it->second;
}

Pipeline& Host::pipeline(const std::string& name) {
    const std::string& n = name.empty() ? default_pipeline_ : name;
    auto it = pipelines_.find(n);
    if (it == pipelines_.end()) {
        std::string names;
        for (const auto& [k, _] : pipelines_) names += (names.empty() ? "" : ", ") + k;
        throw Error(ErrorCode::not_found, "no pipeline named '" + n + "' (configured: " + names + ")");
    }
    return *it->second;
}

std::vector<std::string> Host::pipeline_names() const {
    std::vector<std::string> out;
    for (const auto& [k, _] : pipelines_) out.push_back(k);
    return out;
}

void Host::save_snapshots() {
    const std::uint64_t head = gallery_->journal_head();
    if (snapshot_head_ && *snapshot_head_ == head) return;  // nothing changed since the last one
    bool all = true;
    for (auto& [name, p] : pipelines_) {
        if (!p->settings().snapshots) {
            all = false;
            continue;
        }
        try {
            p->save_snapshot(*gallery_, head);
        } catch (const std::exception& e) {
            all = false;  // the journal stays: the next start replays it
            make_logger("host")->error("pipeline {}: the snapshot could not be written: {}", name, e.what());
        }
    }
    if (all) {
        gallery_->journal_truncate(head);
        snapshot_head_ = head;
    }
}

void Host::load_gallery(const Pipeline::Progress& progress) {
    bool stale = false;
    for (auto& [_, p] : pipelines_) {
        auto stats = p->load(*gallery_, workers_.get(), progress);
        stale |= p->settings().snapshots && (!stats.from_snapshot || stats.replayed > 0) &&
                 (p->size() > 0 || stats.from_snapshot);
    }
    if (stale) save_snapshots();
    else snapshot_head_ = gallery_->journal_head();
    metrics_.gauge("gallery_items", "items in the gallery").set(static_cast<double>(gallery_->ids().size()));
}

}  // namespace sightline::host
