// sightline-bench-features — repeatability, matching score and extraction time of feature
// extractors, loaded through the plugin registry, on the Oxford affine sequences.
// Prints one JSON object on stdout; progress goes to stderr. See docs/features.md.
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <opencv2/core/utility.hpp>
#include <sightline/context.hpp>
#include <sightline/error.hpp>
#include <sightline/features.hpp>

#include "features_bench.hpp"
#include "sightline/host/config_loader.hpp"
#include "sightline/host/console.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/metrics_registry.hpp"
#include "sightline/host/plugin_registry.hpp"

namespace sightline::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct Extractor {
    std::string label;
    std::string yaml;
};

// surf first: it is the extractor this bench exists to judge; the rest are the references. The
// matching score divides by keypoint counts, so surf also runs at the others' 2000 keypoints
// (surf-2000: threshold all but off, the 2000 strongest kept) as well as at its plugin defaults.
const std::vector<Extractor> kDefaultExtractors = {
    {"surf", "{type: surf}"},
    {"surf-2000", "{type: surf, hessian_threshold: 1, max_features: 2000}"},
    {"orb", "{type: orb, max_features: 2000}"},
    {"sift", "{type: opencv, algorithm: sift, max_features: 2000}"},
    {"akaze", "{type: opencv, algorithm: akaze, max_features: 2000}"},
    {"brisk", "{type: opencv, algorithm: brisk, max_features: 2000}"},
    {"kaze", "{type: opencv, algorithm: kaze, max_features: 2000}"},
};

struct Options {
    std::string data;
    std::vector<std::string> plugin_dirs;
    std::vector<std::string> only;
    std::vector<std::string> extractors;  // LABEL=YAML
    std::vector<std::string> sequences;
    int runs = 3;
    ScoreParams score;
    std::string svg;
    std::string log_level = "warn";
    bool pretty = false;
};

void note(const std::string& line) {
    std::cerr << "bench: " << line << "\n" << std::flush;
}

fs::path exe_dir() {
    std::error_code ec;
    fs::path p = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::current_path() : p.parent_path();
}

double round_to(double v, int digits) {
    const double f = std::pow(10.0, digits);
    return std::round(v * f) / f;
}

std::string fixed(double v, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

double median(std::vector<double> v) {
    if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
    std::sort(v.begin(), v.end());
    const std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos)
            return line.substr(line.find(':') + 2);
    return {};
}

bool valid_label(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
    });
}

// The default list, with --extractor entries replacing the one of the same label or added at the
// end, then narrowed to --only (in the list's order).
std::vector<Extractor> extractor_list(const Options& o) {
    std::vector<Extractor> list = kDefaultExtractors;
    for (const auto& spec : o.extractors) {
        const auto eq = spec.find('=');
        if (eq == std::string::npos)
            throw UsageError("--extractor: expected LABEL=YAML, got '" + spec + "'");
        Extractor e{spec.substr(0, eq), spec.substr(eq + 1)};
        if (!valid_label(e.label))
            throw UsageError("--extractor: label '" + e.label +
                             "' must be letters, digits, . _ - +");
        auto it = std::find_if(list.begin(), list.end(),
                               [&](const auto& x) { return x.label == e.label; });
        if (it != list.end())
            *it = e;
        else
            list.push_back(e);
    }
    if (o.only.empty()) return list;
    for (const auto& label : o.only)
        if (std::none_of(list.begin(), list.end(),
                         [&](const auto& x) { return x.label == label; })) {
            std::string known;
            for (const auto& x : list) known += (known.empty() ? "" : ", ") + x.label;
            throw UsageError("--only: no configuration labelled '" + label + "' (have: " + known +
                             ")");
        }
    std::vector<Extractor> kept;
    for (const auto& x : list)
        if (std::find(o.only.begin(), o.only.end(), x.label) != o.only.end()) kept.push_back(x);
    return kept;
}

// What a plugin sees when the bench constructs it: its section, a logger, metrics nobody reads,
// and no storages (an extractor has no business with them).
class BenchContext final : public Context {
  public:
    BenchContext(Config config, std::shared_ptr<spdlog::logger> logger, Metrics& metrics)
        : config_(std::move(config)), logger_(std::move(logger)), metrics_(metrics) {}
    const Config& config() const override { return config_; }
    std::shared_ptr<spdlog::logger> logger() const override { return logger_; }
    Metrics& metrics() const override { return metrics_; }
    std::shared_ptr<Storage> storage(const std::string& name) const override {
        throw Error(ErrorCode::not_found,
                    "no storage named '" + name + "' (the feature bench configures none)");
    }

  private:
    Config config_;
    std::shared_ptr<spdlog::logger> logger_;
    Metrics& metrics_;
};

// A configuration that cannot run: reported in the JSON under its label and skipped.
struct Skip : std::runtime_error {
    Skip(const std::string& error, std::string detail = {})
        : std::runtime_error(error), detail(std::move(detail)) {}
    std::string detail;
};

// The extractor of a configuration, validated as the host validates a pipeline's features section.
std::shared_ptr<FeatureExtractor> create(const host::PluginRegistry& registry, const Extractor& e,
                                         Metrics& metrics) {
    YAML::Node node;
    try {
        node = YAML::Load(e.yaml);
    } catch (const YAML::Exception& ex) {
        throw Skip("invalid YAML: " + std::string(ex.what()));
    }
    if (!node.IsMap() || !node["type"] || !node["type"].IsScalar())
        throw Skip("expected a mapping with a 'type' key, e.g. {type: orb}");
    const std::string type = node["type"].Scalar();
    const auto* plugin = registry.find(PluginKind::features, type);
    if (!plugin) {
        const std::string file = host::plugin_file_name(PluginKind::features, type);
        for (const auto& r : registry.refused())
            if (r.file.filename() == file) throw Skip("plugin not found", r.reason);
        throw Skip("plugin not found");
    }
    std::vector<std::string> errors;
    host::validate_section(node, plugin->schema(), "extractor", e.label, {"type"}, errors);
    if (!errors.empty()) {
        std::string all;
        for (const auto& m : errors) all += (all.empty() ? "" : "; ") + m;
        throw Skip(all);
    }
    BenchContext ctx(Config(node, "extractor", e.label, plugin->schema()),
                     host::make_logger(plugin->full_name()), metrics);
    try {
        return registry.create<PluginKind::features>(*plugin, ctx);
    } catch (const std::exception& ex) {
        throw Skip(ex.what());
    }
}

std::string image_key(const Sequence& s, std::size_t i) {
    return s.name + "_img" + std::to_string(i + 1);
}

// Extracts every image `runs` times; keeps the first run's features, times every run.
struct Extracted {
    std::vector<std::vector<Features>> features;  // [sequence][image]
    std::map<std::string, double> ms;             // median per image, by image_key
};

Extracted extract_all(const FeatureExtractor& x, const std::string& label,
                      const std::vector<Sequence>& sequences, int runs) {
    Extracted out;
    std::size_t total = 0;
    for (const auto& s : sequences) total += s.images.size();
    host::ProgressBar bar(label + ": extracting", total);
    const DescriptorInfo info = x.descriptor_info();
    for (const auto& s : sequences) {
        auto& per_image = out.features.emplace_back();
        for (std::size_t i = 0; i < s.images.size(); ++i) {
            std::vector<double> times;
            for (int r = 0; r < runs; ++r) {
                const auto t0 = Clock::now();
                Features f;
                try {
                    f = x.extract(s.images[i]);
                } catch (const std::exception& ex) {
                    throw Skip("extraction failed on " + image_key(s, i) + ": " + ex.what());
                }
                times.push_back(
                    std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
                if (r > 0) continue;
                // The metrics index descriptors by keypoint; a plugin breaking that contract
                // would give silently wrong numbers.
                if (f.descriptors.rows != static_cast<int>(f.keypoints.size()) ||
                    (!f.keypoints.empty() &&
                     (f.descriptors.type() != info.type || f.descriptors.cols != info.size)))
                    throw Skip("plugin broke its contract on " + image_key(s, i) + ": " +
                               std::to_string(f.keypoints.size()) + " keypoints, descriptors " +
                               std::to_string(f.descriptors.rows) + "x" +
                               std::to_string(f.descriptors.cols) + " type " +
                               std::to_string(f.descriptors.type()));
                per_image.push_back(std::move(f));
            }
            out.ms[image_key(s, i)] = median(times);
            bar.tick();
        }
    }
    return out;
}

nlohmann::ordered_json descriptor_json(const DescriptorInfo& info) {
    return {{"type", info.type == CV_8U    ? "CV_8U"
                     : info.type == CV_32F ? "CV_32F"
                                           : "other"},
            {"size", info.size},
            {"norm", info.type == CV_8U ? "hamming" : "l2"}};
}

nlohmann::ordered_json ms_or_null(double v) {
    return std::isnan(v) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(round_to(v, 2));
}

// Runs one configuration on every sequence. `plot` gets its matching scores per sequence.
nlohmann::ordered_json run_extractor(const host::PluginRegistry& registry, Metrics& metrics,
                                     const Extractor& e, const std::vector<Sequence>& sequences,
                                     const Options& o, PlotSeries& plot) {
    nlohmann::ordered_json r;
    r["label"] = e.label;
    r["yaml"] = e.yaml;
    std::shared_ptr<FeatureExtractor> x;
    Extracted ex;
    try {
        x = create(registry, e, metrics);
        ex = extract_all(*x, e.label, sequences, o.runs);
    } catch (const Skip& skip) {
        r["error"] = skip.what();
        if (!skip.detail.empty()) r["detail"] = skip.detail;
        note(e.label + ": skipped: " + skip.what() +
             (skip.detail.empty() ? "" : " (" + skip.detail + ")"));
        return r;
    }
    r["signature"] = x->signature();
    r["descriptor"] = descriptor_json(x->descriptor_info());

    std::vector<double> all_ms, kps;
    nlohmann::ordered_json per_image = nlohmann::ordered_json::object();
    for (const auto& [key, ms] : ex.ms) {
        all_ms.push_back(ms);
        per_image[key] = round_to(ms, 2);
    }
    for (const auto& seq : ex.features)
        for (const auto& f : seq) kps.push_back(static_cast<double>(f.keypoints.size()));
    const auto graf = ex.ms.find("graf_img1");
    r["extract_ms"] = {{"graf_img1", ms_or_null(graf == ex.ms.end() ? std::nan("") : graf->second)},
                       {"median", ms_or_null(median(all_ms))},
                       {"images", per_image}};
    r["keypoints_median"] = median(kps);

    nlohmann::ordered_json seqs = nlohmann::ordered_json::object(),
                           summary = nlohmann::ordered_json::object();
    for (std::size_t s = 0; s < sequences.size(); ++s) {
        const Sequence& seq = sequences[s];
        const auto& f = ex.features[s];
        nlohmann::ordered_json pairs = nlohmann::ordered_json::array();
        auto& line = plot.values.emplace_back();
        double rep_sum = 0, ms_sum = 0;
        for (std::size_t n = 1; n < seq.images.size(); ++n) {
            PairScore p = score_pair(f[0].keypoints, f[0].descriptors, seq.images[0].size(),
                                     f[n].keypoints, f[n].descriptors, seq.images[n].size(),
                                     seq.homographies[n - 1], o.score);
            pairs.push_back({{"pair", "1-" + std::to_string(n + 1)},
                             {"kps1", p.kps1},
                             {"kps2", p.kps2},
                             {"common1", p.common1},
                             {"common2", p.common2},
                             {"repeated", p.repeated},
                             {"repeatability", round_to(p.repeatability, 4)},
                             {"matching_score", round_to(p.matching_score, 4)},
                             {"correct", p.correct},
                             {"matches", p.matches}});
            line.push_back(p.matching_score);
            rep_sum += p.repeatability;
            ms_sum += p.matching_score;
        }
        const double pairs_n = static_cast<double>(seq.images.size() - 1);
        seqs[seq.name] = pairs;
        summary[seq.name] = {{"repeatability", round_to(rep_sum / pairs_n, 4)},
                             {"matching_score", round_to(ms_sum / pairs_n, 4)}};
    }
    r["sequences"] = seqs;
    r["mean_over_pairs"] = summary;

    std::string line = e.label + ": median " + fixed(median(kps), 0) + " keypoints, " +
                       fixed(median(all_ms), 1) + " ms per image; mean matching score";
    for (const auto& seq : sequences)
        line += " " + seq.name + " " + fixed(summary[seq.name]["matching_score"].get<double>(), 3);
    note(line);
    return r;
}

int run(const Options& o) {
    const auto t0 = Clock::now();
    // Timings are per core, so a 2-core laptop and a 64-core server report comparable numbers;
    // the plugins share this process's OpenCV, so this also reaches their parallel loops.
    cv::setNumThreads(1);

    const fs::path data = fs::path(o.data).lexically_normal();
    if (!fs::is_directory(data)) throw UsageError("--data: no directory " + data.string());
    std::vector<std::string> names = o.sequences.empty() ? default_sequences(data) : o.sequences;
    if (names.empty())
        throw UsageError("--data: no sequence with img1..img6 and H1to2p..H1to6p in " +
                         data.string());
    const std::vector<Extractor> extractors = extractor_list(o);

    std::vector<Sequence> sequences;
    for (const auto& name : names) sequences.push_back(load_sequence(data, name));
    note("data: " + data.string() + " (" + std::to_string(sequences.size()) + " sequences)");

    std::vector<fs::path> plugin_dirs;
    for (const auto& d : o.plugin_dirs) plugin_dirs.emplace_back(d);
    if (plugin_dirs.empty())
        plugin_dirs.push_back((exe_dir() / ".." / "plugins").lexically_normal());
    host::PluginRegistry registry(plugin_dirs);
    registry.load_all();
    if (registry.plugins().empty()) {
        std::string where;
        for (const auto& d : plugin_dirs) where += (where.empty() ? "" : ", ") + d.string();
        note("no plugins found in " + where + " (see --plugins)");
    }
    host::MetricsRegistry metrics;

    nlohmann::ordered_json report;
    report["bench"] = "features";
    report["data"] = data.string();
    report["sequences"] = names;
    nlohmann::ordered_json dirs = nlohmann::ordered_json::array();
    for (const auto& d : plugin_dirs) dirs.push_back(d.string());
    report["plugins"] = dirs;
    report["runs"] = o.runs;
    report["threads"] = 1;
    report["tolerance_px"] = o.score.tolerance_px;
    report["ratio"] = o.score.ratio;
    report["opencv"] = CV_VERSION;
    report["cpu"] = cpu_model();

    nlohmann::ordered_json configs = nlohmann::ordered_json::array();
    std::vector<PlotSeries> plot;
    int extra_styles = 0;
    for (const auto& e : extractors) {
        // The default labels keep their colours whichever of them run (the committed plot is
        // regenerated as plugins arrive); added labels take the styles after them.
        auto known = std::find_if(kDefaultExtractors.begin(), kDefaultExtractors.end(),
                                  [&](const auto& d) { return d.label == e.label; });
        const int style = known != kDefaultExtractors.end()
                              ? static_cast<int>(known - kDefaultExtractors.begin())
                              : static_cast<int>(kDefaultExtractors.size()) + extra_styles++;
        PlotSeries series{e.label, {}, style};
        try {
            configs.push_back(run_extractor(registry, metrics, e, sequences, o, series));
        } catch (const std::exception& ex) {
            // Whatever goes wrong with one extractor (an OpenCV error in matching, say), the
            // others' results are still worth the JSON.
            note(e.label + ": failed: " + ex.what());
            configs.push_back({{"label", e.label}, {"yaml", e.yaml}, {"error", ex.what()}});
            series.values.clear();
        }
        plot.push_back(std::move(series));
    }
    report["configs"] = configs;
    report["elapsed_seconds"] =
        round_to(std::chrono::duration<double>(Clock::now() - t0).count(), 2);

    int rc = 0;
    if (!o.svg.empty()) {
        char subtitle[160];
        std::snprintf(
            subtitle, sizeof subtitle,
            "img1 → imgN; nearest neighbour with ratio test %.2g, correct within %.2g px of "
            "the true position",
            o.score.ratio, o.score.tolerance_px);
        std::ofstream out(o.svg, std::ios::trunc);
        out << matching_score_svg(names, plot, subtitle);
        out.close();
        if (out) {
            note("plot written to " + o.svg);
        } else {
            note("cannot write " + o.svg);
            rc = 1;
        }
    }
    std::cout << report.dump(o.pretty ? 2 : -1) << std::endl;
    return rc;
}

}  // namespace

}  // namespace sightline::bench

int main(int argc, char** argv) {
    using namespace sightline::bench;
    Options o;
    o.data = (fs::path(SIGHTLINE_SOURCE_DIR) / ".." / "shared" / "data" / "oxford-affine")
                 .lexically_normal()
                 .string();
    CLI::App app{
        "sightline-bench-features: repeatability, matching score and extraction time of feature "
        "extractors on the Oxford affine sequences; prints one JSON object (see docs/features.md)"};
    app.get_formatter()->column_width(34);
    app.add_option("--data", o.data, "directory of the sequences (default " + o.data + ")")
        ->type_name("DIR");
    app.add_option("--sequences", o.sequences,
                   "comma-separated sequences (default: every complete one)")
        ->type_name("LIST")
        ->delimiter(',');
    app.add_option("--plugins", o.plugin_dirs,
                   "plugin directory (default <exe dir>/../plugins); repeatable")
        ->type_name("DIR");
    app.add_option("--extractor", o.extractors,
                   "add a configuration, or replace the one with that label, e.g. "
                   "'orb500={type: orb, max_features: 500}'; repeatable")
        ->type_name("LABEL=YAML");
    app.add_option("--only", o.only, "comma-separated labels to run (default: all)")
        ->type_name("LIST")
        ->delimiter(',');
    app.add_option("--runs", o.runs,
                   "timed extractions per image; the median is reported (default 3)")
        ->type_name("N")
        ->check(CLI::Range(1, 100));
    app.add_option("--tolerance", o.score.tolerance_px,
                   "pixels within which a position is correct (default 2.5)")
        ->type_name("PX")
        ->check(CLI::Range(0.1, 100.0));
    app.add_option("--ratio", o.score.ratio, "Lowe's ratio test threshold (default 0.8)")
        ->type_name("R")
        ->check(CLI::Range(0.1, 1.0));
    app.add_option("--svg", o.svg, "also write the matching-score plot here")->type_name("FILE");
    app.add_option("--log-level", o.log_level, "plugin log level (default warn)")
        ->type_name("LEVEL");
    app.add_flag("--pretty", o.pretty, "indent the JSON");
    CLI11_PARSE(app, argc, argv);

    try {
        const auto level = spdlog::level::from_str(o.log_level);
        if (level == spdlog::level::off && o.log_level != "off")
            throw UsageError("--log-level: unknown level '" + o.log_level + "'");
        spdlog::set_level(level);
        return run(o);
    } catch (const UsageError& e) {
        std::cerr << "sightline-bench-features: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sightline-bench-features: " << e.what() << "\n";
        return 1;
    }
}
