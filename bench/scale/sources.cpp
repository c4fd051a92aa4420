// The gallery plan of sightline-bench-scale: true items, the negatives' pool, the distractor
// sources (de-duplicated) and the seeded list of distractors (whole images, then distinct crops).
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <unordered_map>

#include "scale.hpp"
#include "sightline/host/decode.hpp"

namespace sightline::bench {

namespace {

std::vector<std::string> existing(const std::vector<std::string>& dirs) {
    std::vector<std::string> out;
    for (const auto& d : dirs) {
        std::error_code ec;
        if (fs::is_directory(d, ec)) out.push_back(d);
    }
    return out;
}

fs::path canonical_or_self(const fs::path& p) {
    std::error_code ec;
    fs::path c = fs::weakly_canonical(p, ec);
    return ec ? p : c;
}

bool is_under(const fs::path& file, const fs::path& dir) {
    auto f = file.begin(), d = dir.begin();
    for (; d != dir.end(); ++d, ++f) {
        if (d->empty()) continue;  // a trailing separator
        if (f == file.end() || *f != *d) return false;
    }
    return true;
}

// What makes two files "the same picture" for the de-duplication:
// - a KDE wallpaper package (<name>/contents/images*/WxH.ext, screenshot.*): the package;
// - otherwise the parent directory's name and the stem without "@2x" (the high-dpi copies),
//   without a "WxH" / "_WxH" / "-WxH" size suffix, and without an animation frame number
//   ("-3", "+12", "~0", "=1", "^2") when the directory holds at least three such frames.
struct VariantKeys {
    std::map<std::string, std::size_t> frames;  // "<dir>|<base>" -> files

    static std::string stem_of(const fs::path& p) {
        static const std::regex hidpi("@2x$"), res("[-_]?[0-9]+x[0-9]+$");
        std::string stem = p.stem().string();
        stem = std::regex_replace(stem, hidpi, "");
        stem = std::regex_replace(stem, res, "");
        return stem;
    }
    static std::string frame_base(const std::string& stem) {
        static const std::regex frame("[-+~=^][0-9]+$");
        return std::regex_replace(stem, frame, "");
    }
    static std::optional<std::string> kde_package(const fs::path& p) {
        fs::path acc;
        for (const auto& part : p) {
            if (part == "contents") return "kde:" + acc.string();
            acc /= part;
        }
        return std::nullopt;
    }
    void count(const fs::path& p) {
        if (kde_package(p)) return;
        std::string stem = stem_of(p), base = frame_base(stem);
        if (base != stem) ++frames[p.parent_path().string() + "|" + base];
    }
    std::string key(const fs::path& p) const {
        if (auto k = kde_package(p)) return *k;
        std::string stem = stem_of(p), base = frame_base(stem);
        if (base != stem) {
            auto it = frames.find(p.parent_path().string() + "|" + base);
            if (it != frames.end() && it->second >= 3) stem = base;
        }
        return p.parent_path().filename().string() + "/" + stem;
    }
};

std::optional<cv::Size> probe_size(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return std::nullopt;
    Bytes head(512 << 10);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<std::size_t>(in.gcount()));
    for (int attempt = 0; attempt < 2; ++attempt) {
        try {
            auto h = host::probe_image(head);
            if (h.width > 0 && h.height > 0) return cv::Size(h.width, h.height);
            return std::nullopt;
        } catch (const std::exception&) {
            if (attempt == 1) break;
            try {
                head = read_file(file, kMaxImageBytes);  // a header behind large metadata segments
            } catch (const std::exception&) {
                return std::nullopt;
            }
        }
    }
    return std::nullopt;
}

// Groups files by size and drops every file byte-identical to an earlier one in `files` (or to
// one of `against`); returns the kept files, in order.
std::vector<fs::path> drop_identical(const std::vector<fs::path>& files, const std::vector<fs::path>& against,
                                     std::size_t& dropped_against, std::size_t& dropped_among) {
    std::multimap<std::uintmax_t, fs::path> seen_against, seen_kept;
    for (const auto& f : against) {
        std::error_code ec;
        seen_against.emplace(fs::file_size(f, ec), f);
    }
    std::vector<fs::path> kept;
    for (const auto& f : files) {
        std::error_code ec;
        const auto size = fs::file_size(f, ec);
        bool dup = false;
        auto [b, e] = seen_against.equal_range(size);
        for (auto it = b; it != e && !dup; ++it) dup = same_content(f, it->second);
        if (dup) {
            ++dropped_against;
            continue;
        }
        auto [b2, e2] = seen_kept.equal_range(size);
        for (auto it = b2; it != e2 && !dup; ++it) dup = same_content(f, it->second);
        if (dup) {
            ++dropped_among;
            continue;
        }
        seen_kept.emplace(size, f);
        kept.push_back(f);
    }
    return kept;
}

double iou(const cv::Rect2f& a, const cv::Rect2f& b) {
    const double inter = (a & b).area();
    const double uni = a.area() + b.area() - inter;
    return uni > 0 ? inter / uni : 0;
}

// A crop of a `size` image that overlaps none of `taken` by more than kCropMaxIoU, or false after
// kCropTries draws. Every draw takes the same five numbers from the source's own generator.
bool draw_crop(cv::RNG& rng, cv::Size size, const std::vector<cv::Rect2f>& taken, cv::Rect2f& out, bool& mirrored) {
    for (int t = 0; t < kCropTries; ++t) {
        const double a = rng.uniform(kCropMin, kCropMax), b = rng.uniform(kCropMin, kCropMax);
        const double x = rng.uniform(0.0, 1.0), y = rng.uniform(0.0, 1.0);
        const bool m = rng.uniform(0, 2) == 1;
        const double aspect = a * size.width / (b * size.height);
        if (aspect < kCropAspectMin || aspect > kCropAspectMax) continue;
        cv::Rect2f r(static_cast<float>(x * (1 - a)), static_cast<float>(y * (1 - b)), static_cast<float>(a),
                     static_cast<float>(b));
        bool ok = true;
        for (const auto& o : taken) ok = ok && iou(r, o) <= kCropMaxIoU;
        if (!ok) continue;
        out = r;
        mirrored = m;
        return true;
    }
    return false;
}

}  // namespace

std::string default_true_dir() { return "/usr/share/games/endless-sky/images/land"; }

std::vector<std::string> default_distractor_dirs() {
    return existing({"/usr/share/games/endless-sky/images",
                     "/usr/share/games/endless-sky/plugins/endless-sky-high-dpi/images",
                     "/usr/share/games/wesnoth/1.16/data/core/images/portraits", "/usr/share/stellarium/skycultures",
                     "/usr/share/stellarium/nebulae", "/usr/share/wallpapers", "/usr/share/backgrounds"});
}

std::vector<std::string> default_negative_dirs() {
    return existing({"/usr/lib/python3/dist-packages/skimage/data", "/usr/share/doc/opencv-doc/examples/data"});
}

std::string Plan::distractor_id(std::size_t i) const {
    const Distractor& d = distractors[i];
    const std::string& base = sources[d.source].id;
    return d.crop < 0 ? base : base + ".c" + std::to_string(d.crop);
}

std::string Plan::describe(const std::string& id) const {
    for (const auto& t : true_items)
        if (t.id == id) return t.file.string();
    // Ids are "<source id>" or "<source id>.c<k>" (source ids never end in ".c<digits>").
    std::string base = id;
    int crop = -1;
    if (auto dot = id.rfind(".c"); dot != std::string::npos && dot + 2 < id.size() &&
                                   id.find_first_not_of("0123456789", dot + 2) == std::string::npos) {
        base = id.substr(0, dot);
        crop = std::stoi(id.substr(dot + 2));
    }
    for (std::size_t s = 0; s < sources.size(); ++s) {
        if (sources[s].id != base) continue;
        if (crop < 0) return sources[s].file.string();
        for (const auto& d : distractors) {
            if (d.source != s || d.crop != crop) continue;
            const cv::Size sz = sources[s].size;
            char buf[96];
            std::snprintf(buf, sizeof buf, " crop %d,%d,%dx%d%s", static_cast<int>(d.rect.x * sz.width),
                          static_cast<int>(d.rect.y * sz.height), static_cast<int>(d.rect.width * sz.width),
                          static_cast<int>(d.rect.height * sz.height), d.mirrored ? " mirrored" : "");
            return sources[s].file.string() + buf;
        }
    }
    return "";
}

Plan make_plan(const ScaleOptions& o, std::size_t distractors_needed) {
    Plan plan;
    plan.true_dirs = {o.true_dir};
    plan.distractor_dirs = o.distractor_dirs.empty() ? default_distractor_dirs() : o.distractor_dirs;
    plan.negative_dirs = o.negative_dirs.empty() ? default_negative_dirs() : o.negative_dirs;

    // True items and held-out negatives: the split depends on the files only, not on --seed (as in
    // sightline-bench-recognition), so runs with other seeds search for the same items.
    std::vector<fs::path> all_true = scan_images({o.true_dir}, {});
    if (all_true.size() < o.true_items)
        throw UsageError("--true-dir " + o.true_dir + " has " + std::to_string(all_true.size()) +
                         " images; --true-items needs " + std::to_string(o.true_items) +
                         (all_true.empty() ? " (apt-get install endless-sky-data, see docs/bench.md)" : ""));
    cv::RNG split_rng(0x5157c0de);
    std::vector<fs::path> order = all_true;
    shuffle(order, split_rng);
    std::vector<fs::path> chosen(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(o.true_items));
    std::vector<fs::path> held(order.begin() + static_cast<std::ptrdiff_t>(o.true_items), order.end());
    std::sort(chosen.begin(), chosen.end());
    std::sort(held.begin(), held.end());
    std::map<std::string, int> taken;
    for (const auto& f : chosen) plan.true_items.push_back({unique_id(f.stem().string(), taken), f, read_metadata(f)});

    std::vector<fs::path> neg_files = held;
    if (!plan.negative_dirs.empty())
        for (const auto& f : scan_images(plan.negative_dirs, {})) neg_files.push_back(f);
    std::size_t dup_true = 0, dup_neg = 0;
    plan.negative_pool = drop_identical(neg_files, chosen, dup_true, dup_neg);
    plan.held_out = 0;
    for (const auto& f : plan.negative_pool) plan.held_out += is_under(canonical_or_self(f), canonical_or_self(o.true_dir));

    // Distractor sources: nothing under the true or negative dirs, nothing that is (a size or 2x
    // copy of) a true item or a negative, no byte-identical files, one file per picture.
    std::vector<fs::path> protected_files = chosen;
    protected_files.insert(protected_files.end(), plan.negative_pool.begin(), plan.negative_pool.end());
    std::vector<fs::path> protected_dirs{canonical_or_self(o.true_dir)};
    for (const auto& d : plan.negative_dirs) protected_dirs.push_back(canonical_or_self(d));
    std::vector<fs::path> candidates =
        plan.distractor_dirs.empty() ? std::vector<fs::path>{} : scan_images(plan.distractor_dirs, {});
    plan.stats.scanned = candidates.size();

    VariantKeys keys;
    for (const auto& f : candidates) keys.count(f);
    for (const auto& f : protected_files) keys.count(f);
    std::set<std::string> protected_keys;
    for (const auto& f : protected_files) protected_keys.insert(keys.key(f));
    std::vector<fs::path> open;
    for (const auto& f : candidates) {
        const fs::path c = canonical_or_self(f);
        bool prot = protected_keys.count(keys.key(f)) > 0;
        for (const auto& d : protected_dirs) prot = prot || is_under(c, d);
        if (prot)
            ++plan.stats.protected_;
        else
            open.push_back(f);
    }
    std::size_t dup_prot = 0;
    open = drop_identical(open, protected_files, dup_prot, plan.stats.duplicates);
    plan.stats.protected_ += dup_prot;

    struct Cand {
        fs::path file;
        cv::Size size;
    };
    std::map<std::string, Cand> best;  // variant key -> the largest file
    std::size_t readable = 0;
    for (const auto& f : open) {
        auto size = probe_size(f);
        if (!size) {
            ++plan.stats.unreadable;
            continue;
        }
        ++readable;
        auto [it, fresh] = best.try_emplace(keys.key(f), Cand{f, *size});
        if (!fresh && size->area() > it->second.size.area()) it->second = Cand{f, *size};
    }
    plan.stats.variants = readable - best.size();
    std::vector<Cand> kept;
    for (auto& [_, c] : best) {
        if (std::min(c.size.width, c.size.height) < kMinWholeSide)
            ++plan.stats.too_small;
        else
            kept.push_back(std::move(c));
    }
    std::sort(kept.begin(), kept.end(), [](const Cand& a, const Cand& b) { return a.file < b.file; });
    static const std::regex crop_like("\\.c[0-9]+$");
    for (auto& c : kept) {
        // "x-" marks a distractor in answers; a stem that looks like a crop id is changed.
        // A KDE wallpaper is named after its package, not its size ("1920x1080").
        auto kde = VariantKeys::kde_package(c.file);
        std::string stem = sanitize_id(kde ? fs::path(kde->substr(4)).filename().string() : c.file.stem().string());
        if (std::regex_search(stem, crop_like)) stem += "_";
        Source s{c.file, c.size, unique_id("x-" + stem, taken),
                 std::min(c.size.width, c.size.height) >= kMinCropSourceSide};
        plan.stats.crop_sources += s.crops;
        plan.sources.push_back(std::move(s));
    }

    // The distractor list, a prefix of which is every gallery size: the whole images in a seeded
    // order, then crops, one per crop source in turn (a seeded order), each source drawing its
    // crops from its own generator so that its k-th crop does not depend on the others.
    plan.seed = o.seed;
    const std::size_t n = plan.sources.size();
    std::vector<std::uint32_t> whole_order(n);
    for (std::size_t i = 0; i < n; ++i) whole_order[i] = static_cast<std::uint32_t>(i);
    cv::RNG order_rng(synth::mix_seed(o.seed ^ 0x5ca1e0001ull));
    shuffle(whole_order, order_rng);
    for (std::size_t i = 0; i < n && plan.distractors.size() < distractors_needed; ++i)
        plan.distractors.push_back({whole_order[i], -1, cv::Rect2f(0, 0, 1, 1), false});
    plan.wholes = plan.distractors.size();

    std::vector<std::uint32_t> crop_order;
    for (std::size_t i = 0; i < n; ++i)
        if (plan.sources[i].crops) crop_order.push_back(static_cast<std::uint32_t>(i));
    shuffle(crop_order, order_rng);
    std::vector<cv::RNG> rngs;
    std::vector<std::vector<cv::Rect2f>> taken_rects(n);
    for (std::size_t i = 0; i < n; ++i) rngs.emplace_back(synth::mix_seed(o.seed ^ synth::mix_seed(0xc409000000ull + i)));
    std::vector<bool> exhausted(n, false);
    std::size_t live = crop_order.size();
    while (plan.distractors.size() < distractors_needed && live > 0) {
        for (std::uint32_t s : crop_order) {
            if (plan.distractors.size() >= distractors_needed) break;
            if (exhausted[s]) continue;
            cv::Rect2f r;
            bool mirrored = false;
            if (!draw_crop(rngs[s], plan.sources[s].size, taken_rects[s], r, mirrored)) {
                exhausted[s] = true;
                --live;
                continue;
            }
            taken_rects[s].push_back(r);
            plan.distractors.push_back({s, static_cast<std::int32_t>(taken_rects[s].size()), r, mirrored});
        }
    }
    plan.exhausted_sources = crop_order.size() - live;
    return plan;
}

cv::Mat decode_source(const fs::path& file) {
    Bytes bytes = read_file(file, kMaxImageBytes);
    cv::Mat gray = cv::imdecode(bytes, cv::IMREAD_GRAYSCALE | cv::IMREAD_IGNORE_ORIENTATION);
    if (gray.empty()) throw std::runtime_error("not a decodable image");
    return gray;
}

cv::Mat distractor_image(const Distractor& d, const cv::Mat& source, int gallery_size) {
    if (d.crop < 0) return source;  // Pipeline::extract_item shrinks it to gallery_size
    const int W = source.cols, H = source.rows;
    auto px = [](float f, int n) { return std::clamp(static_cast<int>(std::lround(f * static_cast<float>(n))), 0, n); };
    const int x0 = px(d.rect.x, W), y0 = px(d.rect.y, H);
    const int x1 = std::max(x0 + 1, px(d.rect.x + d.rect.width, W)), y1 = std::max(y0 + 1, px(d.rect.y + d.rect.height, H));
    cv::Mat crop = source(cv::Rect(x0, y0, std::min(x1, W) - x0, std::min(y1, H) - y0));
    if (d.mirrored) {
        cv::Mat flipped;
        cv::flip(crop, flipped, 1);
        crop = flipped;
    }
    const double s = static_cast<double>(gallery_size) / std::max(crop.cols, crop.rows);
    const cv::Size out_size(std::max(1, static_cast<int>(std::lround(crop.cols * s))),
                            std::max(1, static_cast<int>(std::lround(crop.rows * s))));
    cv::Mat out;
    cv::resize(crop, out, out_size, 0, 0, s < 1 ? cv::INTER_AREA : cv::INTER_LINEAR);
    return out;
}

}  // namespace sightline::bench
