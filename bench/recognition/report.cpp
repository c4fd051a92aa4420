// Accuracy, latency and throughput from the outcomes; the JSON report and the mistakes CSV.
#include <algorithm>
#include <cmath>
#include <fstream>

#include "bench.hpp"

namespace sightline::bench {

nlohmann::json make_report(const Options& o, const Dataset& d, Driver& driver, const IngestStats& ingest,
                           const RunResult& run, double total_seconds, bool truncated) {
    Tally t = tally(d.queries, run.outcomes);
    auto& count = t.count;
    const std::size_t positives = t.positives, negatives = t.negatives, found_any = t.found_any;
    auto& stages = t.stages;
    auto& e2e = t.e2e;

    nlohmann::json r;
    r["bench"] = "recognition";
    r["driver"] = driver.name();
    r["seed"] = o.seed;
    r["config"] = driver.config_summary();
    r["config"]["overrides"] = o.overrides;

    nlohmann::json g;
    if (!o.set_dir.empty()) g["set_dir"] = o.set_dir;
    g["dirs"] = o.gallery_dirs;
    g["items"] = driver.gallery_size();
    g["files"] = d.gallery.size();
    g["failed"] = ingest.failed;
    g["held_out"] = d.held_out.size();
    g["ingest_seconds"] = round_to(ingest.seconds, 3);
    r["gallery"] = g;
    r["gallery_size"] = driver.gallery_size();

    nlohmann::json qs;
    qs["source"] = d.source;
    qs["positives"] = positives;
    qs["negatives"] = negatives;
    qs["generated"] = d.queries.size();
    qs["not_sent"] = count[Kind::skipped];
    if (d.source == "synthetic") {
        qs["photo_size"] = {o.photo_width, o.photo_height};
        qs["ranges"] = ranges_json(o.ranges);
        std::size_t cut = 0;
        for (const auto& q : d.queries) cut += (q.synth && q.synth->cut_off) ? 1 : 0;
        qs["cut_off"] = cut;
        qs["backgrounds"] = d.backgrounds;
    } else {
        qs["skipped_in_truth"] = d.set_skipped;
    }
    r["queries"] = qs;
    r["concurrency"] = o.concurrency;

    r["recall_at_1"] = ratio(count[Kind::correct], positives);
    r["wrong_id_rate"] = ratio(count[Kind::wrong_id], positives);
    r["miss_rate"] = ratio(count[Kind::missed], positives);
    r["false_positive_rate"] = ratio(count[Kind::false_positive], negatives);
    r["error_rate"] = ratio(count[Kind::error], positives + negatives);
    r["recall_any"] = ratio(found_any, positives);
    r["counts"] = {{"correct", count[Kind::correct]},
                   {"wrong_id", count[Kind::wrong_id]},
                   {"missed", count[Kind::missed]},
                   {"false_positive", count[Kind::false_positive]},
                   {"true_negative", count[Kind::true_negative]},
                   {"error", count[Kind::error]}};

    nlohmann::json lat;
    for (const char* s : {"decode", "extract", "search", "verify", "total"})
        lat[s] = stages.count(s) ? latency(stages[s]) : nlohmann::json(nullptr);
    for (const auto& [s, v] : stages)
        if (!lat.contains(s)) lat[s] = latency(v);
    lat["end_to_end"] = latency(e2e);
    r["latency_ms"] = lat;
    r["requests_per_s"] = run.seconds > 0 ? round_to(static_cast<double>(run.sent) / run.seconds, 2) : 0.0;
    r["query_seconds"] = round_to(run.seconds, 3);
    r["ingest_images_per_s"] =
        ingest.seconds > 0 ? round_to(static_cast<double>(ingest.stored) / ingest.seconds, 2) : 0.0;
    auto rss = driver.peak_rss_bytes();
    r["peak_rss_mib"] = rss ? nlohmann::json(round_to(static_cast<double>(*rss) / 1048576.0, 1)) : nlohmann::json(nullptr);
    r["peak_rss_of"] = driver.peak_rss_of();
    r["elapsed_seconds"] = round_to(total_seconds, 2);
    r["truncated"] = truncated;
    return r;
}

void write_mistakes(const fs::path& file, const Dataset& d, const RunResult& run) {
    if (file.has_parent_path()) fs::create_directories(file.parent_path());
    std::ofstream out(file);
    if (!out) throw std::runtime_error("cannot write " + file.string());
    out << "query,truth,answer,score,inliers,kind,truth_rank,source,end_to_end_ms,scale,rotation_deg,tilt_x,tilt_y,"
           "blur_sigma,noise_sigma,jpeg_quality,cut_off,error\n";
    for (std::size_t i = 0; i < d.queries.size(); ++i) {
        const auto& q = d.queries[i];
        const auto& o = run.outcomes[i];
        Kind k = classify(q, o);
        if (k == Kind::correct || k == Kind::true_negative || k == Kind::skipped) continue;
        std::string answer = "-", score, inliers;
        if (!o.matches.empty()) {
            answer = o.matches.front().id;
            score = std::to_string(round_to(o.matches.front().score, 4));
            score.erase(score.find_last_not_of('0') + 1);
            if (!score.empty() && score.back() == '.') score.pop_back();
            inliers = std::to_string(o.matches.front().inliers);
        }
        // Where the right answer is among the matches (1-based), for a wrong_id.
        std::string rank;
        for (std::size_t m = 0; m < o.matches.size(); ++m)
            if (!q.negative() && o.matches[m].id == q.truth) rank = std::to_string(m + 1);
        out << csv(q.name) << "," << csv(q.negative() ? "-" : q.truth) << "," << csv(answer) << "," << score << ","
            << inliers << "," << kind_name(k) << "," << rank << "," << csv(q.source.string()) << ","
            << round_to(o.end_to_end_ms, 2);
        if (q.synth) {
            const auto& w = q.synth->warp;
            const auto& g = q.synth->degrade;
            out << "," << round_to(w.scale, 3) << "," << round_to(w.rotation_deg, 1) << "," << round_to(w.tilt_x, 3)
                << "," << round_to(w.tilt_y, 3) << "," << round_to(g.blur_sigma, 2) << ","
                << round_to(g.noise_sigma, 2) << "," << g.jpeg_quality << "," << (q.synth->cut_off ? 1 : 0);
        } else {
            out << ",,,,,,,,";
        }
        out << "," << csv(o.error) << "\n";
    }
}

}  // namespace sightline::bench
