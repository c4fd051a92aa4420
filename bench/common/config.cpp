#include <charconv>
#include <cstring>
#include <string>

#include "bench_common.hpp"
#include "embedded_config.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/pipeline.hpp"
#include "sightline/host/plugin_registry.hpp"

// A bench started outside the source tree runs on this; an empty string here once made it fail
// with a confusing storage error.
static_assert(std::char_traits<char>::length(sightline::app::kEmbeddedDefaultConfig) > 0,
              "the embedded default config is empty: bench/CMakeLists.txt must read config/default.yaml");

namespace sightline::bench {

namespace {

std::string json_list(const std::vector<std::string>& items) { return nlohmann::json(items).dump(); }

nlohmann::json scalar_to_json(const std::string& s) {
    if (s == "true" || s == "True" || s == "TRUE") return true;
    if (s == "false" || s == "False" || s == "FALSE") return false;
    if (s == "null" || s == "~") return nullptr;
    const char* b = s.data();
    const char* e = s.data() + s.size();
    long long i = 0;
    if (auto [p, ec] = std::from_chars(b, e, i); ec == std::errc() && p == e && !s.empty()) return i;
    double d = 0;
    if (auto [p, ec] = std::from_chars(b, e, d); ec == std::errc() && p == e && !s.empty()) return d;
    return s;
}

void add_schema_defaults(nlohmann::json& section, const host::PluginRegistry& registry, PluginKind kind) {
    if (!section.is_object() || !section.contains("type") || !section["type"].is_string()) return;
    const auto* plugin = registry.find(kind, section["type"].get<std::string>());
    if (!plugin) return;
    for (const auto& key : plugin->schema()) {
        if (!key.name || section.contains(key.name) || !key.default_value) continue;
        section[key.name] = scalar_to_json(key.default_value);
    }
}

}  // namespace

nlohmann::json yaml_to_json(const YAML::Node& n) {
    if (!n || n.IsNull()) return nullptr;
    if (n.IsScalar()) return scalar_to_json(n.Scalar());
    if (n.IsSequence()) {
        auto a = nlohmann::json::array();
        for (const auto& x : n) a.push_back(yaml_to_json(x));
        return a;
    }
    auto o = nlohmann::json::object();
    for (auto it = n.begin(); it != n.end(); ++it) o[it->first.Scalar()] = yaml_to_json(it->second);
    return o;
}

std::vector<fs::path> plugin_dirs(const ConfigOptions& o) {
    std::vector<fs::path> out;
    for (const auto& d : o.plugin_dirs) out.push_back(fs::absolute(d));
    if (out.empty()) out.push_back((exe_dir().parent_path() / "plugins").lexically_normal());
    for (const auto& d : out) {
        std::error_code ec;
        if (!fs::is_directory(d, ec))
            throw UsageError("plugin directory " + d.string() + " does not exist (pass --plugins DIR, the build's plugins dir)");
    }
    return out;
}

std::string default_pipeline_name(const host::LoadedConfig& c) {
    if (c.root["default_pipeline"]) return c.root["default_pipeline"].Scalar();
    std::string first;
    const YAML::Node& p = c.root["pipelines"];
    if (p && p.IsMap())
        for (auto it = p.begin(); it != p.end(); ++it)
            if (first.empty() || it->first.Scalar() < first) first = it->first.Scalar();
    return first;
}

std::string gallery_storage_name(const host::LoadedConfig& c) {
    const YAML::Node& g = c.root["gallery"];
    if (g && g.IsMap() && g["storage"]) return g["storage"].Scalar();
    return "gallery";
}

host::LoadedConfig load_bench_config(const ConfigOptions& o) {
    host::LoadedConfig c;
    if (!o.config_file.empty())
        c = host::load_config_file(o.config_file);
    else if (fs::exists("config/default.yaml"))
        c = host::load_config_file("config/default.yaml");
    else
        c = host::load_config_text(app::kEmbeddedDefaultConfig, "<built-in default.yaml>");
    // Quiet by default (the bench owns stderr); a --set logging.level=... below wins.
    host::apply_override(c, "logging.level=" + o.log_level);
    for (const auto& s : o.overrides) host::apply_override(c, s);
    // The bench's own plugins, never whatever a relative plugins.paths finds from the cwd.
    std::vector<std::string> dirs;
    for (const auto& d : plugin_dirs(o)) dirs.push_back(d.string());
    host::apply_override(c, "plugins.paths=" + json_list(dirs));
    if (!o.keep_sinks) host::apply_override(c, "sinks=[]");
    const std::string storage = gallery_storage_name(c);
    const YAML::Node& st = c.root["storages"][storage];
    if (!st || !st["type"] || st["type"].Scalar() != "local")
        throw UsageError("the gallery storage '" + storage +
                         "' must be of type local: the bench fills a fresh temporary gallery and never touches a "
                         "configured one");
    return c;
}

nlohmann::json summarize_config(const host::LoadedConfig& c, const std::vector<fs::path>& plugins) {
    host::PluginRegistry registry(plugins);
    registry.load_all();
    const std::string name = default_pipeline_name(c);
    const YAML::Node& p = c.root["pipelines"][name];
    nlohmann::json s;
    s["file"] = c.file;
    s["pipeline"] = name;
    s["features"] = yaml_to_json(p["features"]);
    s["index"] = yaml_to_json(p["index"]);
    add_schema_defaults(s["features"], registry, PluginKind::features);
    add_schema_defaults(s["index"], registry, PluginKind::index);
    const host::PipelineSettings d;
    nlohmann::json v = yaml_to_json(p["verify"]);
    if (!v.is_object()) v = nlohmann::json::object();
    auto def = [&](const char* k, nlohmann::json value) {
        if (!v.contains(k)) v[k] = std::move(value);
    };
    // Only long-lived keys get a default here; every other key shows when the config sets it.
    def("candidates", d.verify.candidates);
    def("min_inliers", d.verify.min_inliers);
    def("min_inlier_ratio", d.verify.min_inlier_ratio);
    def("reprojection_error", d.verify.reprojection_error);
    s["verify"] = v;
    auto num = [&](const char* k, int fallback) -> nlohmann::json {
        return p[k] ? scalar_to_json(p[k].Scalar()) : nlohmann::json(fallback);
    };
    s["working_size"] = num("working_size", d.working_size);
    s["gallery_size"] = num("gallery_size", d.gallery_size);
    s["max_matches"] = num("max_matches", static_cast<int>(d.max_matches));
    s["max_upscale"] = p["max_upscale"] ? scalar_to_json(p["max_upscale"].Scalar()) : nlohmann::json(d.max_upscale);
    // Query-side extraction differs from the gallery's when these are set; a run must show it.
    if (p["query_features"]) s["query_features"] = yaml_to_json(p["query_features"]);
    s["search_features"] = num("search_features", static_cast<int>(d.search_features));
    s["search_grid"] = num("search_grid", d.search_grid);
    if (p["clahe"]) s["clahe"] = scalar_to_json(p["clahe"].Scalar());
    s["limits"] = yaml_to_json(c.root["limits"]);
    return s;
}

nlohmann::json summarize_pipeline(const host::LoadedConfig& c, const std::vector<fs::path>& plugins, host::Host& h) {
    nlohmann::json s = summarize_config(c, plugins);
    const auto& p = h.pipeline();
    const auto& st = p.settings();
    s["pipeline"] = p.name();
    s["signature"] = p.signature();
    s["working_size"] = st.working_size;
    s["gallery_size"] = st.gallery_size;
    s["max_upscale"] = st.max_upscale;
    s["max_matches"] = st.max_matches;
    s["verify"]["candidates"] = st.verify.candidates;
    s["verify"]["min_inliers"] = st.verify.min_inliers;
    s["verify"]["min_inlier_ratio"] = st.verify.min_inlier_ratio;
    s["verify"]["reprojection_error"] = st.verify.reprojection_error;
    s["workers"] = h.limits().workers;
    return s;
}

}  // namespace sightline::bench
