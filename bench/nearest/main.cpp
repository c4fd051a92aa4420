// sightline-bench-nearest: the exact two-nearest kernels of SDK nearest.hpp against
// cv::batchDistance, on one thread, for the shape brute-force matching has (a query's descriptors
// against a gallery item's). Prints one JSON object; docs/bench.md shows how to read it.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <sightline/nearest.hpp>
#include <vector>

namespace {

double median_ms(int repeats, const std::function<void()>& run) {
    std::vector<double> ms;
    for (int i = 0; i < repeats; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        run();
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "sightline-bench-nearest: exact L2 two-nearest kernels vs cv::batchDistance (one thread)"};
    int queries = 3000, gallery = 500, dims = 64, repeats = 7;
    app.add_option("--queries", queries, "query descriptors (default 3000, the default pipeline's)")
        ->check(CLI::Range(1, 1000000));
    app.add_option("--gallery", gallery, "gallery descriptors (default 500, one default item)")
        ->check(CLI::Range(2, 1000000));
    app.add_option("--dims", dims, "descriptor width (default 64, SURF)")
        ->check(CLI::Range(1, 4096));
    app.add_option("--repeats", repeats,
                   "timed runs per kernel; the median is reported (default 7)")
        ->check(CLI::Range(1, 1000));
    CLI11_PARSE(app, argc, argv);

    cv::setNumThreads(1);
    cv::Mat q(queries, dims, CV_32F), g(gallery, dims, CV_32F);
    cv::RNG rng(1);
    rng.fill(q, cv::RNG::UNIFORM, -1.0, 1.0);
    rng.fill(g, cv::RNG::UNIFORM, -1.0, 1.0);
    const double flops = 2.0 * queries * gallery * dims;

    namespace nd = sightline::nearest_detail;
    const auto kernels = nd::available_kernels();
    nlohmann::json out;
    out["shape"] = {{"queries", queries}, {"gallery", gallery}, {"dims", dims}};
    out["threads"] = 1;
    out["repeats"] = repeats;
    cv::Mat dist, idx;
    const double ref = median_ms(repeats, [&] {
        cv::Mat d;
        cv::batchDistance(q, g, d, CV_32F, idx, cv::NORM_L2, 2);
    });
    out["kernels"]["batchDistance"] = {{"median_ms", ref}, {"gflops", flops / ref / 1e6}};
    for (const auto& [name, k] : kernels) {
        const double ms = median_ms(repeats, [&] { nd::l2_top2_with(q, g, dist, idx, k); });
        out["kernels"][name] = {{"median_ms", ms},
                                {"gflops", flops / ms / 1e6},
                                {"speedup_vs_batchDistance", ref / ms}};
    }
    out["chosen"] = kernels.front().name;  // what l2_top2 uses
    std::cout << out.dump(2) << "\n";
}
