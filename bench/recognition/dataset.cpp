// The gallery, held-out negatives, labelled sets and synthetic queries of the recognition bench
// (scanning, ids and query synthesis are in bench/common).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>

#include "bench.hpp"

namespace sightline::bench {

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

    // The query list (bench/common): positives cycle through the gallery in a seeded order, negatives
    // through the pool, interleaved in a seeded order; then rendered as synthetic phone photos.
    std::vector<QueryItem> items;
    for (const auto& g : d.gallery) items.push_back({g.id, g.file});
    std::vector<QueryJob> jobs = plan_queries(o.seed, positives, items, negatives, pool);
    synth::Ranges ranges = o.ranges;
    ranges.photo_size = photo;
    SynthQueries made = synthesize_queries(jobs, ranges, o.seed, o.backgrounds, [&] { return budget.expired(); });
    d.backgrounds = made.backgrounds;
    d.queries = std::move(made.queries);
    if (made.failed) note(std::to_string(made.failed) + " queries could not be generated (unreadable images)");
    return d;
}

void save_queries(const Dataset& d, const fs::path& dir) {
    fs::create_directories(dir);
    std::ofstream truth(dir / "truth.tsv"), params(dir / "params.tsv");
    params << "query\ttruth\tsource\tscale\trotation_deg\ttilt_x\ttilt_y\tblur_sigma\tnoise_sigma\tbrightness\t"
              "contrast\tjpeg_quality\tcut_off\titem_size\tcorners\n";
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
                   << g.jpeg_quality << "\t" << (q.synth->cut_off ? 1 : 0) << "\t" << q.synth->item_size.width
                   << "x" << q.synth->item_size.height << "\t";
            for (std::size_t i = 0; i < 4; ++i)
                params << (i ? " " : "") << q.synth->corners[i].x << " " << q.synth->corners[i].y;
        } else {
            params << "\t\t\t\t\t\t\t\t\t\t\t\t";
        }
        params << "\n";
    }
}

}  // namespace sightline::bench
