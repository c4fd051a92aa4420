// Synthetic phone-photo queries of known images (bench/synth), planned and rendered from a seed.
#include <algorithm>
#include <cstdio>

#include "bench_common.hpp"

namespace sightline::bench {

std::vector<QueryJob> plan_queries(std::uint64_t seed, std::size_t positives, const std::vector<QueryItem>& items,
                                   std::size_t negatives, const std::vector<fs::path>& pool) {
    cv::RNG rng(synth::mix_seed(seed));
    std::vector<QueryJob> jobs;
    std::vector<std::size_t> perm;
    for (std::size_t i = 0; i < positives && !items.empty(); ++i) {
        if (i % items.size() == 0) {
            perm.resize(items.size());
            for (std::size_t k = 0; k < perm.size(); ++k) perm[k] = k;
            shuffle(perm, rng);
        }
        const QueryItem& item = items[perm[i % perm.size()]];
        jobs.push_back({item.file, item.id, synth::mix_seed(seed ^ synth::mix_seed(2 * i + 1))});
    }
    std::vector<std::size_t> nperm;
    for (std::size_t j = 0; j < negatives && !pool.empty(); ++j) {
        if (j % pool.size() == 0) {
            nperm.resize(pool.size());
            for (std::size_t k = 0; k < nperm.size(); ++k) nperm[k] = k;
            shuffle(nperm, rng);
        }
        jobs.push_back({pool[nperm[j % nperm.size()]], std::string(), synth::mix_seed(seed ^ synth::mix_seed(2 * j + 2))});
    }
    shuffle(jobs, rng);
    return jobs;
}

SynthQueries synthesize_queries(const std::vector<QueryJob>& jobs, const synth::Ranges& ranges, std::uint64_t seed,
                                std::size_t backgrounds, const std::function<bool()>& stop) {
    SynthQueries out;
    const cv::Size photo = ranges.photo_size;
    const std::size_t bg_bytes = static_cast<std::size_t>(photo.area()) * 3;
    const std::size_t max_bgs = backgrounds ? backgrounds : std::clamp<std::size_t>((256u << 20) / bg_bytes, 4, 32);
    std::vector<cv::Mat> bgs(std::min(max_bgs, std::max<std::size_t>(jobs.size(), 1)));
    out.backgrounds = bgs.size();
    std::vector<std::optional<QueryCase>> made(jobs.size());
    std::atomic<std::size_t> failed{0};
    Progress bar("generating queries", bgs.size() + jobs.size());
    parallel_for(bgs.size(), stop, [&](std::size_t i) {
        bgs[i] = synth::clutter_background(photo, synth::mix_seed(seed ^ (0xb4c6ull << 32) ^ i));
        bar.tick();
    });
    if (stop()) return out;
    parallel_for(jobs.size(), stop, [&](std::size_t i) {
        const QueryJob& job = jobs[i];
        try {
            cv::Mat item = load_item(job.file, photo);
            auto [warp, degrade] = synth::random_params(ranges, job.seed, item.size());
            const cv::Mat& background = bgs[synth::mix_seed(job.seed ^ 0xb4c6) % bgs.size()];
            synth::Photo ph = synth::render(item, background, warp, degrade);
            QueryCase q;
            q.truth = job.truth;
            q.image.assign(ph.jpeg.begin(), ph.jpeg.end());
            q.source = job.file;
            bool cut = false;
            for (const auto& c : ph.corners)
                cut = cut || c.x < 0 || c.y < 0 || c.x > static_cast<float>(photo.width) ||
                      c.y > static_cast<float>(photo.height);
            q.synth = SynthInfo{warp, degrade, cut, ph.corners, item.size()};
            made[i] = std::move(q);
        } catch (const std::exception& e) {
            ++failed;
            note("cannot make a query from " + job.file.string() + ": " + e.what());
        }
        bar.tick();
    });
    std::size_t n = 0;
    for (auto& q : made) {
        if (!q) continue;
        char name[32];
        std::snprintf(name, sizeof name, "query-%04zu.jpg", ++n);
        q->name = name;
        out.queries.push_back(std::move(*q));
    }
    out.failed = failed.load();
    return out;
}

}  // namespace sightline::bench
