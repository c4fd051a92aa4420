// Gallery scanning, ids, held-out negatives, labelled sets and synthetic query generation.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "bench.hpp"

namespace sightline::bench {

namespace {

constexpr std::uint64_t kMaxImageBytes = 64ull << 20;  // larger files are skipped
constexpr std::size_t kMaxIdLength = 128;

// Seeded Fisher-Yates shuffle (cv::RNG: the same order on every platform).
template <class T> void shuffle(std::vector<T>& v, cv::RNG& rng) {
    for (int i = static_cast<int>(v.size()) - 1; i > 0; --i)
        std::swap(v[static_cast<std::size_t>(i)], v[static_cast<std::size_t>(rng.uniform(0, i + 1))]);
}

std::string read_metadata(const fs::path& image) {
    fs::path sidecar = fs::path(image).replace_extension(".json");
    std::error_code ec;
    if (!fs::is_regular_file(sidecar, ec) || fs::file_size(sidecar, ec) > (256u << 10)) return "{}";
    std::ifstream in(sidecar, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto j = nlohmann::json::parse(text, nullptr, false);
    return j.is_object() ? j.dump() : "{}";
}

bool same_content(const fs::path& a, const fs::path& b) {
    try {
        return read_file(a, kMaxImageBytes) == read_file(b, kMaxImageBytes);
    } catch (const std::exception&) {
        return false;
    }
}

// The item image for rendering: BGR, EXIF orientation applied (as the pipeline decodes it), and
// shrunk when much larger than the photo (warping a huge image down aliases and costs time).
cv::Mat load_item(const fs::path& file, cv::Size photo) {
    Bytes bytes = read_file(file, kMaxImageBytes);
    cv::Mat img = cv::imdecode(bytes, cv::IMREAD_COLOR);
    if (img.empty()) throw std::runtime_error(file.string() + ": not a decodable image");
    const int limit = 2 * std::max(photo.width, photo.height);
    const int long_side = std::max(img.cols, img.rows);
    if (long_side > limit) {
        double f = static_cast<double>(limit) / long_side;
        cv::Mat small;
        cv::resize(img, small, cv::Size(), f, f, cv::INTER_AREA);
        img = small;
    }
    return img;
}

// Runs fn(0..n-1) on one thread per core; stops taking new indexes when the budget runs out.
template <class F> void parallel_for(std::size_t n, const Budget& budget, F fn) {
    std::atomic<std::size_t> next{0};
    auto work = [&] {
        for (std::size_t i; (i = next++) < n && !budget.expired();) fn(i);
    };
    const std::size_t threads = std::min<std::size_t>(n, std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
}

struct Job {
    bool negative = false;
    std::size_t index = 0;  // positive: gallery entry; negative: pool image
    std::uint64_t seed = 0;
};

}  // namespace

std::string sanitize_id(const std::string& stem) {
    std::string id;
    for (unsigned char c : stem) {
        bool ok = std::isalnum(c) || c == '.' || c == '_' || c == '-';
        id.push_back(ok && c < 128 ? static_cast<char>(c) : '_');
    }
    while (!id.empty() && id.front() == '.') id.erase(id.begin());
    if (id.size() > kMaxIdLength) id.resize(kMaxIdLength);
    if (id.empty()) id = "item";
    return id;
}

std::string unique_id(const std::string& stem, std::map<std::string, int>& taken) {
    std::string base = sanitize_id(stem);
    if (!taken.count(base)) {
        taken[base] = 1;
        return base;
    }
    for (int n = taken[base] + 1;; ++n) {
        std::string suffix = "-" + std::to_string(n);
        std::string id = base.substr(0, kMaxIdLength - suffix.size()) + suffix;
        if (!taken.count(id)) {
            taken[base] = n;
            taken[id] = 1;
            return id;
        }
    }
}

std::vector<fs::path> scan_images(const std::vector<std::string>& dirs, const std::vector<std::string>& exclude) {
    std::set<fs::path> seen;
    std::vector<fs::path> out;
    for (const auto& d : dirs) {
        std::error_code ec;
        if (!fs::is_directory(d, ec)) throw UsageError("not a directory: " + d);
        auto it = fs::recursive_directory_iterator(d, fs::directory_options::skip_permission_denied, ec);
        if (ec) throw UsageError("cannot read " + d + ": " + ec.message());
        for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
            if (ec) break;
            const auto& e = *it;
            if (e.is_directory(ec)) {
                const std::string name = e.path().filename().string();
                if (std::find(exclude.begin(), exclude.end(), name) != exclude.end()) it.disable_recursion_pending();
                continue;
            }
            if (!e.is_regular_file(ec) || !is_image_file(e.path())) continue;
            fs::path canon = fs::weakly_canonical(e.path(), ec);
            if (!seen.insert(ec ? e.path() : canon).second) continue;
            out.push_back(e.path());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

Dataset build_dataset(const Options& o, const Budget& budget) {
    Dataset d;
    std::map<std::string, int> taken;
    const cv::Size photo(o.photo_width, o.photo_height);

    if (!o.set_dir.empty()) {
        d.source = "set";
        const fs::path root(o.set_dir);
        if (!fs::is_directory(root / "gallery") || !fs::is_regular_file(root / "truth.tsv"))
            throw UsageError("--set-dir " + o.set_dir + ": expected gallery/ and truth.tsv (see docs/bench.md)");
        std::set<std::string> set_ids;
        for (const auto& f : scan_images({(root / "gallery").string()}, {})) {
            std::string id = unique_id(f.stem().string(), taken);
            if (id != f.stem().string())
                note("set gallery file " + f.string() + " gets the id '" + id + "' (truth.tsv must use that)");
            set_ids.insert(id);
            d.gallery.push_back({id, f, read_metadata(f)});
        }
        if (!o.gallery_dirs.empty()) {
            auto extra = scan_images(o.gallery_dirs, o.exclude_dirs);
            if (o.max_items && extra.size() > o.max_items) extra.resize(o.max_items);
            for (const auto& f : extra) d.gallery.push_back({unique_id(f.stem().string(), taken), f, read_metadata(f)});
        }
        std::ifstream in(root / "truth.tsv");
        std::string line;
        while (std::getline(in, line)) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line.empty() || line[0] == '#') continue;
            auto tab = line.find('\t');
            if (tab == std::string::npos) {
                ++d.set_skipped;
                note("truth.tsv: no tab in line '" + line + "'; skipped");
                continue;
            }
            std::string file = line.substr(0, tab), truth = line.substr(tab + 1);
            if (truth == "-") truth.clear();
            if (!truth.empty() && !set_ids.count(truth)) {
                ++d.set_skipped;
                note("truth.tsv: " + file + " names '" + truth + "', which is not in " + (root / "gallery").string() +
                     "; skipped");
                continue;
            }
            fs::path p = root / "queries" / file;
            if (!fs::is_regular_file(p)) p = root / file;
            QueryCase q;
            q.name = file;
            q.truth = truth;
            q.source = p;
            q.content_type = content_type_for(p);
            try {
                q.image = read_file(p, kMaxImageBytes);
            } catch (const std::exception& e) {
                ++d.set_skipped;
                note(std::string(e.what()) + "; skipped");
                continue;
            }
            d.queries.push_back(std::move(q));
        }
        return d;
    }

    d.source = "synthetic";
    if (o.gallery_dirs.empty()) throw UsageError("give --gallery DIR (or --set-dir DIR)");
    std::vector<fs::path> all = scan_images(o.gallery_dirs, o.exclude_dirs);
    if (all.empty()) throw UsageError("no images (jpg, png, webp, bmp) found in the --gallery directories");

    const std::size_t positives = o.queries;
    const std::size_t negatives =
        o.negatives ? *o.negatives : static_cast<std::size_t>(std::lround(static_cast<double>(positives) / 5.0));

    // The gallery / held-out split depends on the files found only, not on --seed, so runs with
    // different seeds query the same gallery.
    cv::RNG split_rng(0x5157c0de);
    std::vector<fs::path> order = all;
    shuffle(order, split_rng);
    std::vector<fs::path> pool;  // negatives' source images
    std::size_t first_gallery = 0;
    if (negatives > 0 && !o.negatives_from.empty()) {
        std::multimap<std::uintmax_t, fs::path> by_size;
        for (const auto& f : all) {
            std::error_code ec;
            by_size.emplace(fs::file_size(f, ec), f);
        }
        for (const auto& f : scan_images(o.negatives_from, o.exclude_dirs)) {
            std::error_code ec;
            auto [b, e] = by_size.equal_range(fs::file_size(f, ec));
            bool dup = false;
            for (auto it = b; it != e && !dup; ++it) dup = same_content(f, it->second);
            if (!dup) pool.push_back(f);
        }
        if (pool.empty())
            throw UsageError("--negatives-from: no images there that are not also in the gallery directories");
    } else if (negatives > 0) {
        std::size_t k = o.holdout ? *o.holdout
                                  : std::clamp<std::size_t>(negatives, 1, std::max<std::size_t>(1, all.size() / 10));
        if (k >= all.size())
            throw UsageError("cannot hold out " + std::to_string(k) + " of " + std::to_string(all.size()) +
                             " images as negatives and keep a gallery; use --negatives-from DIR or --negatives 0");
        pool.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
        std::sort(pool.begin(), pool.end());
        d.held_out = pool;
        first_gallery = k;
    }
    std::vector<fs::path> files(order.begin() + static_cast<std::ptrdiff_t>(first_gallery), order.end());
    if (o.max_items && files.size() > o.max_items) files.resize(o.max_items);
    std::sort(files.begin(), files.end());
    for (const auto& f : files) d.gallery.push_back({unique_id(f.stem().string(), taken), f, read_metadata(f)});

    // The query list: positives cycle through the gallery in a seeded order (every item once per
    // cycle), negatives through the pool; then the two are interleaved in a seeded order.
    cv::RNG rng(synth::mix_seed(o.seed));
    std::vector<Job> jobs;
    std::vector<std::size_t> perm;
    for (std::size_t i = 0; i < positives; ++i) {
        if (i % d.gallery.size() == 0) {
            perm.resize(d.gallery.size());
            for (std::size_t k = 0; k < perm.size(); ++k) perm[k] = k;
            shuffle(perm, rng);
        }
        jobs.push_back({false, perm[i % perm.size()], synth::mix_seed(o.seed ^ synth::mix_seed(2 * i + 1))});
    }
    std::vector<std::size_t> nperm;
    for (std::size_t j = 0; j < negatives && !pool.empty(); ++j) {
        if (j % pool.size() == 0) {
            nperm.resize(pool.size());
            for (std::size_t k = 0; k < nperm.size(); ++k) nperm[k] = k;
            shuffle(nperm, rng);
        }
        jobs.push_back({true, nperm[j % nperm.size()], synth::mix_seed(o.seed ^ synth::mix_seed(2 * j + 2))});
    }
    shuffle(jobs, rng);

    synth::Ranges ranges = o.ranges;
    ranges.photo_size = photo;
    // A procedural background costs several times a render, so the queries share a seeded pool of
    // them (at most ~256 MB worth), each query drawing one by its own seed.
    const std::size_t bg_bytes = static_cast<std::size_t>(photo.area()) * 3;
    const std::size_t max_bgs =
        o.backgrounds ? o.backgrounds : std::clamp<std::size_t>((256u << 20) / bg_bytes, 4, 32);
    std::vector<cv::Mat> backgrounds(std::min(max_bgs, std::max<std::size_t>(jobs.size(), 1)));
    d.backgrounds = backgrounds.size();
    std::vector<std::optional<QueryCase>> made(jobs.size());
    std::atomic<std::size_t> failed{0};
    Progress bar("generating queries", backgrounds.size() + jobs.size());
    parallel_for(backgrounds.size(), budget, [&](std::size_t i) {
        backgrounds[i] = synth::clutter_background(photo, synth::mix_seed(o.seed ^ (0xb4c6ull << 32) ^ i));
        bar.tick();
    });
    if (budget.expired()) return d;
    parallel_for(jobs.size(), budget, [&](std::size_t i) {
        const Job& job = jobs[i];
        const fs::path& file = job.negative ? pool[job.index] : d.gallery[job.index].file;
        try {
            cv::Mat item = load_item(file, photo);
            auto [warp, degrade] = synth::random_params(ranges, job.seed, item.size());
            const cv::Mat& background = backgrounds[synth::mix_seed(job.seed ^ 0xb4c6) % backgrounds.size()];
            synth::Photo ph = synth::render(item, background, warp, degrade);
            QueryCase q;
            q.truth = job.negative ? std::string() : d.gallery[job.index].id;
            q.image.assign(ph.jpeg.begin(), ph.jpeg.end());
            q.source = file;
            bool cut = false;
            for (const auto& c : ph.corners)
                cut = cut || c.x < 0 || c.y < 0 || c.x > static_cast<float>(photo.width) ||
                      c.y > static_cast<float>(photo.height);
            q.synth = SynthInfo{warp, degrade, cut};
            made[i] = std::move(q);
        } catch (const std::exception& e) {
            ++failed;
            note("cannot make a query from " + file.string() + ": " + e.what());
        }
        bar.tick();
    });
    std::size_t n = 0;
    for (auto& q : made) {
        if (!q) continue;
        char name[32];
        std::snprintf(name, sizeof name, "query-%04zu.jpg", ++n);
        q->name = name;
        d.queries.push_back(std::move(*q));
    }
    if (failed) note(std::to_string(failed.load()) + " queries could not be generated (unreadable images)");
    return d;
}

void save_queries(const Dataset& d, const fs::path& dir) {
    fs::create_directories(dir);
    std::ofstream truth(dir / "truth.tsv"), params(dir / "params.tsv");
    params << "query\ttruth\tsource\tscale\trotation_deg\ttilt_x\ttilt_y\tblur_sigma\tnoise_sigma\tbrightness\t"
              "contrast\tjpeg_quality\tcut_off\n";
    for (const auto& q : d.queries) {
        fs::path out = dir / fs::path(q.name).filename();
        std::ofstream f(out, std::ios::binary);
        f.write(reinterpret_cast<const char*>(q.image.data()), static_cast<std::streamsize>(q.image.size()));
        if (!f) throw std::runtime_error("cannot write " + out.string());
        const std::string t = q.truth.empty() ? "-" : q.truth;
        truth << out.filename().string() << "\t" << t << "\n";
        params << out.filename().string() << "\t" << t << "\t" << q.source.string();
        if (q.synth) {
            const auto& w = q.synth->warp;
            const auto& g = q.synth->degrade;
            params << "\t" << w.scale << "\t" << w.rotation_deg << "\t" << w.tilt_x << "\t" << w.tilt_y << "\t"
                   << g.blur_sigma << "\t" << g.noise_sigma << "\t" << g.brightness << "\t" << g.contrast << "\t"
                   << g.jpeg_quality << "\t" << (q.synth->cut_off ? 1 : 0);
        } else {
            params << "\t\t\t\t\t\t\t\t\t\t";
        }
        params << "\n";
    }
}

}  // namespace sightline::bench
