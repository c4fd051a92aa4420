// sightline-bench-scale — recall@1, false positives, latency, memory, add rate and index snapshot
// times of a pipeline on galleries of growing size (true items + distractors). Prints one JSON
// object on stdout (and to --out); progress goes to stderr. See docs/bench.md.
#include <CLI/CLI.hpp>
#include <malloc.h>
#include <signal.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <istream>
#include <ostream>
#include <sstream>

#include "scale.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/pipeline.hpp"

namespace sightline::bench {

std::atomic<bool> g_stop{false};

namespace {

void on_signal(int) { g_stop.store(true); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double mib(std::uint64_t bytes) { return round_to(static_cast<double>(bytes) / 1048576.0, 1); }

// The memory figures are meant to show what the gallery holds, so freed heap (extraction scratch,
// a destroyed snapshot host) is handed back to the kernel before RSS is read.
std::uint64_t rss_now() {
    ::malloc_trim(0);
    return proc_status_bytes("VmRSS").value_or(0);
}

// Resets VmHWM to the current RSS (Linux: "5" > /proc/self/clear_refs), so that each size's
// peak is its own. Returns false where the kernel does not allow it.
bool reset_peak_rss() {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
    f.flush();
    return static_cast<bool>(f);
}

Outcome recognize(const host::Pipeline& p, const QueryCase& q) {
    Request req;
    req.id = q.name;
    req.image = q.image;
    req.content_type = q.content_type;
    Outcome out;
    const auto t0 = Clock::now();
    Result r = p.recognize(req);  // never throws
    out.end_to_end_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    for (const auto& m : r.matches) out.matches.push_back({m.id, m.score, m.inliers});
    out.timings_ms = r.timings_ms;
    if (r.error) out.error = r.error->code + ": " + r.error->message;
    out.done = true;
    return out;
}

std::vector<Outcome> run_queries(const host::Pipeline& p, const std::vector<QueryCase>& queries,
                                 std::size_t concurrency, const std::string& label, double& seconds) {
    std::vector<Outcome> out(queries.size());
    Progress bar(label, queries.size());
    const auto t0 = Clock::now();
    parallel_for(
        queries.size(), [] { return g_stop.load(); },
        [&](std::size_t i) {
            out[i] = recognize(p, queries[i]);
            bar.tick();
        },
        concurrency);
    seconds = seconds_since(t0);
    return out;
}

// Accuracy and latency of one size's answers, in sightline-bench-recognition's field names.
nlohmann::json score(const std::vector<QueryCase>& queries, const std::vector<Outcome>& outcomes, double seconds) {
    Tally t = tally(queries, outcomes);
    auto& count = t.count;
    const std::size_t positives = t.positives, negatives = t.negatives, found_any = t.found_any, sent = t.sent;
    auto& stages = t.stages;
    auto& e2e = t.e2e;
    auto& search_verify = t.search_verify;
    nlohmann::json r;
    r["recall_at_1"] = ratio(count[Kind::correct], positives);
    r["wrong_id_rate"] = ratio(count[Kind::wrong_id], positives);
    r["miss_rate"] = ratio(count[Kind::missed], positives);
    r["false_positive_rate"] = ratio(count[Kind::false_positive], negatives);
    r["error_rate"] = ratio(count[Kind::error], positives + negatives);
    r["recall_any"] = ratio(found_any, positives);
    r["counts"] = {{"positives", positives},
                   {"negatives", negatives},
                   {"correct", count[Kind::correct]},
                   {"wrong_id", count[Kind::wrong_id]},
                   {"missed", count[Kind::missed]},
                   {"false_positive", count[Kind::false_positive]},
                   {"true_negative", count[Kind::true_negative]},
                   {"error", count[Kind::error]},
                   {"not_sent", count[Kind::skipped]}};
    nlohmann::json lat;
    lat["search_verify"] = latency(search_verify);
    lat["end_to_end"] = latency(e2e);
    for (const char* s : {"decode", "extract", "search", "verify", "total"})
        lat[s] = stages.count(s) ? latency(stages[s]) : nlohmann::json(nullptr);
    for (const auto& [s, v] : stages)
        if (!lat.contains(s)) lat[s] = latency(v);
    r["latency_ms"] = lat;
    r["requests_per_s"] = seconds > 0 ? round_to(static_cast<double>(sent) / seconds, 2) : 0.0;
    r["query_seconds"] = round_to(seconds, 3);
    return r;
}

// Pipeline::save_index / load_index, when this build's pipeline has them (they come with the
// index work); otherwise the snapshot is reported as null.
template <class P>
concept IndexSnapshots = requires(P& p, std::ostream& os, std::istream& is) {
    p.save_index(os);
    p.load_index(is);
};
// Or the host's own snapshots: Pipeline::save_snapshot into the gallery storage, read back by
// Pipeline::load on a fresh host over the same storage.
template <class P>
concept GallerySnapshots = requires(P& p, host::Gallery& g, typename P::LoadStats st) {
    p.save_snapshot(g, std::uint64_t{0});
    p.load(g);
    st.from_snapshot;
};
constexpr bool kHasSnapshots = IndexSnapshots<host::Pipeline> || GallerySnapshots<host::Pipeline>;

std::uintmax_t tree_bytes(const fs::path& dir) {
    std::uintmax_t n = 0;
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec))
        if (it->is_regular_file(ec)) n += it->file_size(ec);
    return n;
}

// Saves the index to a file, loads it into a fresh Host's pipeline and re-runs a few queries on it.
template <class P>
nlohmann::json snapshot(P& pipeline, host::Host& h, const host::LoadedConfig& config,
                        const std::vector<fs::path>& plugins, const fs::path& file,
                        const fs::path& gallery_root, const std::vector<QueryCase>& queries,
                        const std::vector<Outcome>& outcomes, std::size_t checks,
                        const host::Pipeline::ReferenceReader& records) {
    nlohmann::json s;
    if constexpr (IndexSnapshots<P> || GallerySnapshots<P>) {
        try {
            Progress bar("snapshot of " + std::to_string(pipeline.size()) + " items",
                         3 + std::min(checks, queries.size()));
            auto t = Clock::now();
            if constexpr (IndexSnapshots<P>) {
                s["method"] = "Pipeline::save_index/load_index (a file)";
                std::ofstream out(file, std::ios::binary | std::ios::trunc);
                if (!out) throw std::runtime_error("cannot write " + file.string());
                pipeline.save_index(out);
                out.flush();
                if (!out) throw std::runtime_error("writing " + file.string() + " failed");
            } else {
                s["method"] = "Pipeline::save_snapshot into the gallery storage, Pipeline::load on a fresh host";
                pipeline.save_snapshot(h.gallery(), 0);
            }
            s["save_seconds"] = round_to(seconds_since(t), 3);
            std::error_code ec;
            if constexpr (IndexSnapshots<P>)
                s["bytes"] = fs::file_size(file, ec);
            else
                s["bytes"] = tree_bytes(gallery_root);
            bar.tick();
            t = Clock::now();
            host::Host fresh(config, plugins);
            s["fresh_host_seconds"] = round_to(seconds_since(t), 3);
            bar.tick();
            P& loaded = fresh.pipeline();
            if (records)
                loaded.set_reference_reader(records);  // the records are not in its storage
            t = Clock::now();
            if constexpr (IndexSnapshots<P>) {
                std::ifstream in(file, std::ios::binary);
                if (!in) throw std::runtime_error("cannot read " + file.string());
                loaded.load_index(in);
            } else {
                auto st = loaded.load(fresh.gallery());
                s["from_snapshot"] = st.from_snapshot;
            }
            s["load_seconds"] = round_to(seconds_since(t), 3);
            s["items_loaded"] = loaded.size();
            bar.tick();
            // The loaded pipeline must answer as the built one did.
            std::size_t checked = 0, same = 0;
            for (std::size_t i = 0; i < queries.size() && checked < checks && !g_stop.load(); ++i) {
                if (!outcomes[i].done || !outcomes[i].error.empty()) continue;
                Outcome o = recognize(loaded, queries[i]);
                ++checked;
                const std::string a = outcomes[i].matches.empty() ? "" : outcomes[i].matches.front().id;
                const std::string b = o.matches.empty() ? "" : o.matches.front().id;
                same += a == b && o.error.empty();
                bar.tick();
            }
            bar.update(3 + std::min(checks, queries.size()));
            s["answers_checked"] = checked;
            s["same_answers"] = same;
            s["ok"] = loaded.size() == pipeline.size() && same == checked;
        } catch (const std::exception& e) {
            s["error"] = e.what();
        }
        std::error_code ec;
        fs::remove(file, ec);
    } else {
        (void)pipeline, (void)h, (void)config, (void)plugins, (void)file, (void)gallery_root,
            (void)queries, (void)outcomes, (void)checks, (void)records;
        s = nullptr;
    }
    return s;
}

void write_mistakes(const fs::path& file, const Plan& plan, const std::vector<QueryCase>& queries,
                    const std::vector<Outcome>& outcomes, std::size_t items) {
    if (file.has_parent_path()) fs::create_directories(file.parent_path());
    std::ofstream out(file);
    if (!out) throw std::runtime_error("cannot write " + file.string());
    out << "query,truth,answer,score,inliers,kind,items,truth_rank,source,answer_source,error\n";
    for (std::size_t i = 0; i < queries.size(); ++i) {
        const auto& q = queries[i];
        const auto& o = outcomes[i];
        Kind k = classify(q, o);
        if (k == Kind::correct || k == Kind::true_negative || k == Kind::skipped) continue;
        std::string answer = "-", score, inliers, answer_source;
        if (!o.matches.empty()) {
            answer = o.matches.front().id;
            std::ostringstream sc;
            sc << round_to(o.matches.front().score, 4);
            score = sc.str();
            inliers = std::to_string(o.matches.front().inliers);
            answer_source = plan.describe(answer);
        }
        std::string rank;
        for (std::size_t m = 0; m < o.matches.size(); ++m)
            if (!q.negative() && o.matches[m].id == q.truth) rank = std::to_string(m + 1);
        out << csv(q.name) << "," << csv(q.negative() ? "-" : q.truth) << "," << csv(answer) << "," << score << ","
            << inliers << "," << kind_name(k) << "," << items << "," << rank << "," << csv(q.source.string()) << ","
            << csv(answer_source) << "," << csv(o.error) << "\n";
    }
}

void emit(const nlohmann::json& report, const ScaleOptions& o, bool to_stdout) {
    const std::string text = report.dump(o.pretty ? 2 : -1);
    if (!o.out_file.empty()) {
        const fs::path tmp = o.out_file + ".tmp";
        {
            std::ofstream f(tmp);
            f << text << "\n";
            if (!f) throw std::runtime_error("cannot write " + tmp.string());
        }
        fs::rename(tmp, o.out_file);
    }
    if (to_stdout) std::cout << text << std::endl;
}

nlohmann::json sources_json(const Plan& plan) {
    return {{"scanned", plan.stats.scanned},
            {"kept", plan.sources.size()},
            {"crop_sources", plan.stats.crop_sources},
            {"dropped_protected", plan.stats.protected_},
            {"dropped_duplicates", plan.stats.duplicates},
            {"dropped_variants", plan.stats.variants},
            {"dropped_too_small", plan.stats.too_small},
            {"dropped_unreadable", plan.stats.unreadable}};
}

// What the gallery plan holds, as both the plan-only output and the report's gallery section say it.
nlohmann::json plan_json(const Plan& plan, double plan_seconds) {
    return {{"true_items", plan.true_items.size()},
            {"distractor_dirs", plan.distractor_dirs},
            {"sources", sources_json(plan)},
            {"planned_distractors", plan.distractors.size()},
            {"planned_whole", plan.wholes},
            {"exhausted_crop_sources", plan.exhausted_sources},
            {"plan_seconds", round_to(plan_seconds, 2)}};
}

int run(const ScaleOptions& o) {
    const auto t_start = Clock::now();
    const std::size_t largest = o.sizes.back();
    if (!o.out_file.empty() && fs::path(o.out_file).has_parent_path())
        fs::create_directories(fs::path(o.out_file).parent_path());

    // The plan first: it needs no pipeline, and a shortage of distractors shows before any work.
    note("scanning image sources");
    const auto t_plan = Clock::now();
    Plan plan = make_plan(o, largest - o.true_items);
    const double plan_seconds = seconds_since(t_plan);
    if (o.plan_only) {
        nlohmann::json r = plan_json(plan, plan_seconds);
        r["bench"] = "scale";
        r["seed"] = o.seed;
        r["plan_only"] = true;
        r["sizes"] = o.sizes;
        r["enough"] = plan.true_items.size() + plan.distractors.size() >= largest;
        r["negative_pool"] = plan.negative_pool.size();
        if (!o.save_gallery_dir.empty()) write_gallery_tsv(o.save_gallery_dir, plan, largest);
        emit(r, o, true);
        return 0;
    }
    if (plan.true_items.size() + plan.distractors.size() < largest)
        throw UsageError("the distractor sources give " + std::to_string(plan.distractors.size()) +
                         " distractors (" + std::to_string(plan.sources.size()) + " images, " +
                         std::to_string(plan.stats.crop_sources) + " of them large enough for crops, all exhausted); " +
                         std::to_string(largest) + " items need " + std::to_string(largest - o.true_items) +
                         ": install the image packages (docs/bench.md), add --distractors DIR or lower --sizes");
    note("gallery plan: " + std::to_string(plan.true_items.size()) + " true items, " +
         std::to_string(plan.sources.size()) + " distractor images (" + std::to_string(plan.stats.crop_sources) +
         " crop sources), " + std::to_string(plan.wholes) + " whole + " +
         std::to_string(plan.distractors.size() - plan.wholes) + " crops planned; negatives from " +
         std::to_string(plan.negative_pool.size()) + " images");

    // The host, with a fresh temporary gallery storage that stays empty (add_record skips it).
    const std::vector<fs::path> plugins = plugin_dirs(o);
    host::LoadedConfig config = load_bench_config(o);
    host::apply_override(config, "transports=[]");
    if (!o.pipeline.empty()) host::apply_override(config, "default_pipeline=" + o.pipeline);
    const fs::path temp = make_temp_dir("sightline-bench-scale");
    struct RemoveTemp {
        fs::path p;
        ~RemoveTemp() {
            std::error_code ec;
            fs::remove_all(p, ec);
        }
    } remove_temp{temp};
    host::apply_override(config, "storages." + gallery_storage_name(config) +
                                     ".root=" + nlohmann::json((temp / "gallery").string()).dump());
    auto h = std::make_unique<host::Host>(config, plugins);
    host::Pipeline& pipeline = h->pipeline();

    // The same queries at every size.
    std::vector<QueryItem> items;
    for (const auto& t : plan.true_items) items.push_back({t.id, t.file});
    std::vector<QueryJob> jobs = plan_queries(o.seed, o.queries, items, o.negatives, plan.negative_pool);
    synth::Ranges ranges;
    ranges.photo_size = cv::Size(o.photo_width, o.photo_height);
    SynthQueries made = synthesize_queries(jobs, ranges, o.seed, 0, [] { return g_stop.load(); });
    if (made.failed) note(std::to_string(made.failed) + " queries could not be generated (unreadable images)");
    const std::vector<QueryCase>& queries = made.queries;
    std::size_t positives = 0, cut = 0;
    for (const auto& q : queries) {
        positives += q.negative() ? 0 : 1;
        cut += (q.synth && q.synth->cut_off) ? 1 : 0;
    }

    nlohmann::json report;
    report["bench"] = "scale";
    report["seed"] = o.seed;
    report["config"] = summarize_pipeline(config, plugins, *h);
    report["config"]["overrides"] = o.overrides;
    report["machine"] = {{"cores", std::thread::hardware_concurrency()},
                         {"build_threads", o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency())},
                         {"query_concurrency", o.concurrency},
                         {"add", o.parallel_add ? "parallel" : "ordered"}};
    report["gallery"] = plan_json(plan, plan_seconds);
    report["gallery"]["true_dir"] = o.true_dir;
    report["gallery"]["crop_rules"] = {{"side", {kCropMin, kCropMax}},
                                       {"aspect", {kCropAspectMin, kCropAspectMax}},
                                       {"max_iou", kCropMaxIoU},
                                       {"mirrored_probability", 0.5},
                                       {"min_source_side", kMinCropSourceSide},
                                       {"min_whole_side", kMinWholeSide}};
    report["queries"] = {{"positives", positives},
                         {"negatives", queries.size() - positives},
                         {"generated", queries.size()},
                         {"negative_dirs", plan.negative_dirs},
                         {"negative_pool", plan.negative_pool.size()},
                         {"held_out", plan.held_out},
                         {"photo_size", {o.photo_width, o.photo_height}},
                         {"ranges", ranges_json(ranges)},
                         {"cut_off", cut},
                         {"backgrounds", made.backgrounds}};
    if (!kHasSnapshots)
        report["snapshot_note"] =
            "this build's Pipeline has neither save_index/load_index nor save_snapshot: the index cannot be reached "
            "from the host, so no snapshot was timed";
    report["sizes"] = nlohmann::json::array();
    report["truncated"] = false;
    report["complete"] = false;

    if (!o.save_gallery_dir.empty()) write_gallery_tsv(o.save_gallery_dir, plan, largest);
    // A warm-up extraction and query (on the empty index), so that what the libraries set up on first
    // use is part of the baseline rather than of the first size's bytes per item.
    try {
        const Bytes warm = read_file(plan.true_items.front().file, kMaxImageBytes);
        (void)pipeline.extract_item("warm-up", std::span<const std::uint8_t>(warm));
    } catch (const std::exception&) {
    }
    if (!queries.empty()) (void)recognize(pipeline, queries.front());
    const std::uint64_t baseline = rss_now();
    report["rss_baseline_mib"] = mib(baseline);
    const bool peak_resets = reset_peak_rss();

    // Where the records go: the features cache, else, when verification confirms against them,
    // the temporary directory (a served gallery keeps them in its storage).
    fs::path records = records_dir(pipeline, plan, o.features_cache);
    if (records.empty() && pipeline.settings().verify.confirm)
        fs::create_directories(records = temp / "records");
    host::Pipeline::ReferenceReader reader;
    if (!records.empty())
        pipeline.set_reference_reader(
            reader = [records, signature = pipeline.signature()](const std::string& id) {
                return read_record(records, id, signature);
            });

    std::size_t built = 0;  // distractors in the index
    double build_total = 0;
    std::vector<Outcome> last;
    std::size_t last_items = 0;
    std::uint64_t last_rss = 0;
    for (std::size_t si = 0; si < o.sizes.size() && !g_stop.load(); ++si) {
        const std::size_t size = o.sizes[si];
        const std::size_t to = size - o.true_items;
        BuildStats b = build_increment(pipeline, plan, si == 0, built, to, o.threads,
                                       o.parallel_add, o.save_gallery_dir, records);
        build_total += b.seconds;
        if (b.interrupted) break;
        for (const auto& f : b.failures) note("  not indexed: " + f);
        const std::size_t wholes = std::min(to, plan.wholes);
        built = to;
        const std::uint64_t rss = rss_now();
        const std::size_t n_items = pipeline.size();

        double qsec = 0;
        std::vector<Outcome> outcomes =
            run_queries(pipeline, queries, o.concurrency, "recognizing at " + std::to_string(n_items), qsec);
        nlohmann::json s;
        s["size"] = size;
        s["items"] = n_items;
        s["true_items"] = plan.true_items.size();
        s["distractors"] = {{"whole", wholes}, {"crops", to - wholes}};
        s.update(score(queries, outcomes, qsec));
        const std::size_t added = b.added;
        s["build"] = {{"added", added},
                      {"failed", b.failed},
                      {"seconds", round_to(b.seconds, 3)},
                      {"items_per_s", b.seconds > 0 ? round_to(static_cast<double>(added) / b.seconds, 1) : 0.0},
                      {"add_record_seconds", round_to(b.add_record_seconds, 3)},
                      {"add_record_items_per_s",
                       b.add_record_seconds > 0 ? round_to(static_cast<double>(added) / b.add_record_seconds, 1) : 0.0},
                      {"cumulative_seconds", round_to(build_total, 3)}};
        const std::uint64_t peak = proc_status_bytes("VmHWM").value_or(0);
        s["rss_after_build_mib"] = mib(rss);
        s["peak_rss_mib"] = mib(peak);
        s["bytes_per_item"] =
            n_items ? nlohmann::json(std::llround(
                          (static_cast<double>(rss) - static_cast<double>(baseline)) / static_cast<double>(n_items)))
                    : nlohmann::json(nullptr);
        // What the items added in this step cost each: the slope, free of fixed costs.
        s["bytes_per_item_marginal"] =
            si > 0 && n_items > last_items
                ? nlohmann::json(std::llround((static_cast<double>(rss) - static_cast<double>(last_rss)) /
                                              static_cast<double>(n_items - last_items)))
                : nlohmann::json(nullptr);
        last_rss = rss;
        if (o.snapshot && !g_stop.load()) {
            s["snapshot"] =
                snapshot(pipeline, *h, config, plugins, temp / "index.snapshot", temp / "gallery",
                         queries, outcomes, o.snapshot_checks, reader);
            if (s["snapshot"].is_object() && s["snapshot"].contains("error"))
                note("snapshot failed: " + s["snapshot"]["error"].get<std::string>());
            else if (s["snapshot"].is_object() && !s["snapshot"].value("ok", true))
                note("snapshot: the loaded pipeline holds " + s["snapshot"]["items_loaded"].dump() + " of " +
                     std::to_string(n_items) + " items and gave " + s["snapshot"]["same_answers"].dump() + " of " +
                     s["snapshot"]["answers_checked"].dump() + " answers the same");
        } else {
            s["snapshot"] = nullptr;
        }
        s["truncated"] = g_stop.load();
        report["sizes"].push_back(s);
        note("size " + std::to_string(n_items) + ": recall@1 " + s["recall_at_1"].dump() + ", false positives " +
             s["false_positive_rate"].dump() + ", search+verify p50 " +
             (s["latency_ms"]["search_verify"].is_object() ? s["latency_ms"]["search_verify"]["p50"].dump() : "-") +
             " ms, " + s["bytes_per_item"].dump() + " B/item");
        last = std::move(outcomes);
        last_items = n_items;
        report["elapsed_seconds"] = round_to(seconds_since(t_start), 2);
        emit(report, o, false);  // the sizes done so far survive a crash or kill of a long run
        if (peak_resets) reset_peak_rss();
    }
    report["peak_rss_resets_per_size"] = peak_resets;
    report["truncated"] = g_stop.load() || report["sizes"].size() < o.sizes.size();
    report["complete"] = !report["truncated"].get<bool>();
    if (report["truncated"].get<bool>()) note("interrupted: reporting the sizes done");
    if (!o.mistakes_csv.empty() && !last.empty()) {
        write_mistakes(o.mistakes_csv, plan, queries, last, last_items);
        note("mistakes at " + std::to_string(last_items) + " items written to " + o.mistakes_csv);
    }
    h.reset();
    report["elapsed_seconds"] = round_to(seconds_since(t_start), 2);
    emit(report, o, true);
    return 0;
}

std::vector<std::size_t> parse_sizes(const std::string& s) {
    std::vector<std::size_t> out;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, ',')) {
        std::size_t pos = 0;
        unsigned long long v = 0;
        try {
            v = std::stoull(part, &pos);
        } catch (const std::exception&) {
            pos = 0;
        }
        if (pos == 0 || pos != part.size() || v == 0 || v > 10'000'000)
            throw UsageError("--sizes: expected a comma-separated list of item counts (1..10000000), got '" + s + "'");
        out.push_back(static_cast<std::size_t>(v));
    }
    if (out.empty()) throw UsageError("--sizes: no sizes given");
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

}  // namespace

}  // namespace sightline::bench

int main(int argc, char** argv) {
    using namespace sightline::bench;
    ScaleOptions o;
    o.true_dir = default_true_dir();
    CLI::App app{"sightline-bench-scale: recall@1, false positives, latency, memory, add rate and snapshot times of a "
                 "sightline pipeline on galleries of growing size; prints one JSON object (see docs/bench.md)"};
    app.get_formatter()->column_width(34);
    std::string sizes = "1000,10000,100000", photo_size;

    app.add_option("--sizes", sizes, "gallery sizes in items, built one after the other (default 1000,10000,100000)")
        ->type_name("N,N,...");
    app.add_option("--true-items", o.true_items, "photographs in the gallery that the positives show (default 200)")
        ->type_name("P")
        ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
    app.add_option("--queries", o.queries, "positive queries: phone photos of the true items (default 200)")
        ->type_name("N")
        ->check(CLI::Range(std::size_t{0}, std::size_t{100000}));
    app.add_option("--negatives", o.negatives, "negative queries: photos of images not in the gallery (default 100)")
        ->type_name("N")
        ->check(CLI::Range(std::size_t{0}, std::size_t{100000}));
    app.add_option("--seed", o.seed, "seed of the crops and the queries (default 1)")->type_name("S");
    app.add_option("--threads", o.threads, "threads that make and extract gallery items (default: one per core)")
        ->type_name("T")
        ->check(CLI::Range(std::size_t{0}, std::size_t{256}));
    app.add_option("--concurrency,-c", o.concurrency, "threads sending queries (default 1: clean latencies)")
        ->type_name("C")
        ->check(CLI::Range(std::size_t{1}, std::size_t{256}));
    app.add_option("--true-dir", o.true_dir,
                   "the true items' photographs; the ones not used are negatives (default "
                   "/usr/share/games/endless-sky/images/land)")
        ->type_name("DIR");
    app.add_option("--distractors", o.distractor_dirs,
                   "distractor image directory, repeatable (default: the Debian package paths in docs/bench.md)")
        ->type_name("DIR");
    app.add_option("--negatives-from", o.negative_dirs,
                   "more images for negatives, repeatable (default: python3-skimage's and opencv-doc's sample images)")
        ->type_name("DIR");
    app.add_option("--photo-size", photo_size, "synthetic photo size (default 1024x768)")->type_name("WxH");
    app.add_option("--config", o.config_file,
                   "config file (default: config/default.yaml if present, else the built-in default)")
        ->type_name("FILE");
    app.add_option("--pipeline", o.pipeline, "the config's pipeline to measure (default: its default pipeline)")
        ->type_name("NAME");
    app.add_option("--set", o.overrides, "override a config value, e.g. pipelines.orb.verify.min_inliers=20; repeatable")
        ->type_name("KEY=VALUE");
    app.add_option("--plugins", o.plugin_dirs, "plugin directory (default <exe dir>/../plugins); repeatable")
        ->type_name("DIR");
    app.add_option("--log-level", o.log_level, "host log level (default warn)")->type_name("LEVEL");
    app.add_flag("--parallel-add", o.parallel_add,
                 "call add_record from the extraction threads (faster when the index's add is costly; the index "
                 "order then varies between runs)");
    app.add_flag("!--no-snapshot", o.snapshot, "skip saving and loading the index at each size");
    app.add_option("--snapshot-checks", o.snapshot_checks,
                   "queries re-run on the snapshot-loaded pipeline to compare answers (default 20)")
        ->type_name("N");
    app.add_option("--out", o.out_file, "also write the JSON here (rewritten after every size)")->type_name("FILE");
    app.add_option("--mistakes", o.mistakes_csv, "write the misrecognitions at the largest size as CSV")
        ->type_name("FILE.csv");
    app.add_option("--save-gallery", o.save_gallery_dir,
                   "write every distractor image (<id>.png, as indexed) and gallery.tsv here; for small runs")
        ->type_name("DIR");
    app.add_option("--features-cache", o.features_cache,
                   "keep every gallery item's feature record here (a subdirectory per extractor signature, gallery "
                   "size, seed and image directories) and reuse them in later runs: index and search settings can "
                   "then be compared at 100,000 items without extracting again. Several GB at that size; build rates "
                   "then exclude extraction")
        ->type_name("DIR");
    app.add_flag("--plan-only", o.plan_only,
                 "scan the sources, plan the gallery for the largest size, print the plan's counts and stop");
    app.add_flag("--pretty", o.pretty, "indent the JSON");
    CLI11_PARSE(app, argc, argv);
    log_to_stderr("sightline-bench-scale");

    try {
        o.sizes = parse_sizes(sizes);
        if (o.sizes.front() < o.true_items)
            throw UsageError("--sizes: the smallest size (" + std::to_string(o.sizes.front()) +
                             ") is below --true-items (" + std::to_string(o.true_items) + ")");
        if (!photo_size.empty()) {
            int w = 0, h = 0;
            char x = 0, extra = 0;
            if (std::sscanf(photo_size.c_str(), "%d%c%d%c", &w, &x, &h, &extra) != 3 || (x != 'x' && x != 'X') ||
                w < 64 || h < 64 || w > 4096 || h > 4096)
                throw UsageError("--photo-size: expected WxH within 64..4096, got '" + photo_size + "'");
            o.photo_width = w;
            o.photo_height = h;
        }
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESETHAND;  // a second signal ends the process
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, nullptr);
        sigaction(SIGTERM, &sa, nullptr);
        return run(o);
    } catch (const UsageError& e) {
        std::cerr << "sightline-bench-scale: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sightline-bench-scale: " << e.what() << "\n";
        return 1;
    }
}
