// Answer classes, latency statistics and small formatting helpers for the benchmarks' reports.
#include <algorithm>
#include <cmath>

#include "bench_common.hpp"

namespace sightline::bench {

const char* kind_name(Kind k) {
    switch (k) {
        case Kind::skipped: return "skipped";
        case Kind::correct: return "correct";
        case Kind::wrong_id: return "wrong_id";
        case Kind::missed: return "missed";
        case Kind::error: return "error";
        case Kind::true_negative: return "true_negative";
        case Kind::false_positive: return "false_positive";
    }
    return "?";
}

Tally tally(const std::vector<QueryCase>& queries, const std::vector<Outcome>& outcomes) {
    Tally t;
    for (std::size_t i = 0; i < queries.size() && i < outcomes.size(); ++i) {
        const auto& q = queries[i];
        const auto& o = outcomes[i];
        Kind k = classify(q, o);
        ++t.count[k];
        if (k == Kind::skipped) continue;
        ++t.sent;
        (q.negative() ? t.negatives : t.positives)++;
        if (!q.negative())
            for (const auto& m : o.matches) t.found_any += m.id == q.truth ? 1 : 0;
        if (k == Kind::error) continue;
        t.e2e.push_back(o.end_to_end_ms);
        for (const auto& [stage, ms] : o.timings_ms) t.stages[stage].push_back(ms);
        auto s = o.timings_ms.find("search"), v = o.timings_ms.find("verify");
        t.search_verify.push_back((s != o.timings_ms.end() ? s->second : 0) + (v != o.timings_ms.end() ? v->second : 0));
    }
    return t;
}

Kind classify(const QueryCase& q, const Outcome& o) {
    if (!o.done) return Kind::skipped;
    if (!o.error.empty()) return Kind::error;
    if (q.negative()) return o.matches.empty() ? Kind::true_negative : Kind::false_positive;
    if (o.matches.empty()) return Kind::missed;
    return o.matches.front().id == q.truth ? Kind::correct : Kind::wrong_id;
}

double round_to(double v, int digits) {
    double f = std::pow(10.0, digits);
    return std::round(v * f) / f;
}

double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    double pos = p / 100.0 * static_cast<double>(sorted.size() - 1);
    auto lo = static_cast<std::size_t>(std::floor(pos));
    auto hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

nlohmann::json latency(std::vector<double> v) {
    if (v.empty()) return nullptr;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    return {{"p50", round_to(percentile(v, 50), 3)},
            {"p95", round_to(percentile(v, 95), 3)},
            {"p99", round_to(percentile(v, 99), 3)},
            {"mean", round_to(sum / static_cast<double>(v.size()), 3)},
            {"max", round_to(v.back(), 3)},
            {"n", v.size()}};
}

double ratio(std::size_t a, std::size_t b) {
    return b ? round_to(static_cast<double>(a) / static_cast<double>(b), 4) : 0.0;
}

std::string csv(const std::string& s) {
    if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
    std::string out = "\"";
    for (char c : s) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

nlohmann::json ranges_json(const synth::Ranges& rg) {
    return {{"scale", {rg.scale_min, rg.scale_max}},
            {"rotation_deg", rg.rotation_max_deg},
            {"tilt", rg.tilt_max},
            {"blur_sigma_max", rg.blur_max},
            {"noise_sigma_max", rg.noise_max},
            {"brightness_max", rg.brightness_max},
            {"contrast", {rg.contrast_min, rg.contrast_max}},
            {"jpeg_quality", {rg.jpeg_min, rg.jpeg_max}},
            {"cutoff_probability", rg.cutoff_probability}};
}

}  // namespace sightline::bench
