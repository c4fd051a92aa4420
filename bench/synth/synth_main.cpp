// sightline-synth — makes synthetic "phone photo" queries from a gallery.
//
//   sightline-synth --gallery DIR --out DIR [--count N] [--seed S]
//                   [--negatives DIR] [--negative-count M] [--size WxH]
//                   [--corners] [--prefix NAME] [--scale MIN:MAX]
//                   [--rotation DEG] [--tilt T] [--cutoff P] [--verbose]
//
// See usage() below for the meaning of each option.

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <opencv2/imgcodecs.hpp>

#include "sightline/synth/synth.hpp"

namespace fs = std::filesystem;
namespace synth = sightline::synth;

namespace {

constexpr int kExitUsage = 2;
constexpr int kExitFailure = 1;

void usage(std::ostream& os) {
    os << "usage: sightline-synth --gallery DIR --out DIR [options]\n"
          "\n"
          "Renders synthetic phone photos of gallery images (perspective, rotation, blur,\n"
          "noise, JPEG, cluttered background) and writes OUT/<prefix>-NNNN.jpg plus lines\n"
          "\"<file>\\t<id>\" appended to OUT/truth.tsv (id = gallery file stem; \"-\" for a\n"
          "negative query). Deterministic for a seed.\n"
          "\n"
          "  --gallery DIR         gallery images (*.jpg, *.jpeg, *.png), sorted by name\n"
          "  --out DIR             output directory (created if missing)\n"
          "  --count N             number of positive queries (default 10); gallery images\n"
          "                        are taken in a seeded random order, each once per cycle\n"
          "  --seed S              64-bit seed (default 1)\n"
          "  --negatives DIR       images NOT in the gallery, rendered as negative queries\n"
          "  --negative-count M    number of negative queries (default: one per image in\n"
          "                        --negatives)\n"
          "  --size WxH            photo size (default 1024x768)\n"
          "  --corners             also write OUT/<name>.corners.txt: the item's 4 corners\n"
          "                        (top-left, top-right, bottom-right, bottom-left), one\n"
          "                        \"x y\" line each, in photo pixels\n"
          "  --prefix NAME         output file prefix (default \"query\")\n"
          "  --scale MIN:MAX       scale range relative to the fit (default 0.3:1.0)\n"
          "  --rotation DEG        max rotation in degrees (default 30)\n"
          "  --tilt T              max perspective tilt, 0..0.5 (default 0.3)\n"
          "  --cutoff P            probability that the item is partly cut off (default 0.1)\n"
          "  --verbose             print the parameters of each query\n"
          "  -h, --help            this help\n";
}

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

template <class T>
T parse_number(std::string_view opt, std::string_view s) {
    T v{};
    const auto* end = s.data() + s.size();
    const auto [p, ec] = std::from_chars(s.data(), end, v);
    if (ec != std::errc() || p != end || s.empty())
        throw UsageError(std::string(opt) + ": not a valid number: '" + std::string(s) + "'");
    return v;
}

std::vector<fs::path> list_images(const fs::path& dir, const char* opt) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw std::runtime_error(std::string(opt) + ": not a directory: " + dir.string());
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (!e.is_regular_file()) continue;
        std::string ext = e.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(),
                       [](unsigned char c) { return char(std::tolower(c)); });
        if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") out.push_back(e.path());
    }
    std::sort(out.begin(), out.end(),
              [](const fs::path& a, const fs::path& b) { return a.filename().string() < b.filename().string(); });
    if (out.empty())
        throw std::runtime_error(std::string(opt) + ": no .jpg/.jpeg/.png images in " + dir.string());
    return out;
}

// Seeded Fisher-Yates shuffle (cv::RNG: same result on every platform).
template <class T>
void shuffle(std::vector<T>& v, cv::RNG& rng) {
    for (int i = int(v.size()) - 1; i > 0; --i) std::swap(v[size_t(i)], v[size_t(rng.uniform(0, i + 1))]);
}

struct Job {
    fs::path image;
    std::string truth;  // id or "-"
};

struct Options {
    fs::path gallery, out, negatives;
    int count = 10;
    std::optional<int> negative_count;
    std::uint64_t seed = 1;
    bool corners = false, verbose = false;
    std::string prefix = "query";
    synth::Ranges ranges;
};

Options parse_args(int argc, char** argv) {
    Options o;
    bool have_gallery = false, have_out = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= argc) throw UsageError(std::string(a) + ": missing value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            usage(std::cout);
            std::exit(0);
        } else if (a == "--gallery") {
            o.gallery = std::string(value());
            have_gallery = true;
        } else if (a == "--out") {
            o.out = std::string(value());
            have_out = true;
        } else if (a == "--negatives") {
            o.negatives = std::string(value());
        } else if (a == "--count") {
            o.count = parse_number<int>(a, value());
            if (o.count < 0) throw UsageError("--count must be >= 0");
        } else if (a == "--negative-count") {
            o.negative_count = parse_number<int>(a, value());
            if (*o.negative_count < 0) throw UsageError("--negative-count must be >= 0");
        } else if (a == "--seed") {
            o.seed = parse_number<std::uint64_t>(a, value());
        } else if (a == "--size") {
            const std::string_view v = value();
            const auto x = v.find_first_of("xX");
            if (x == std::string_view::npos) throw UsageError("--size: expected WxH, got '" + std::string(v) + "'");
            const int w = parse_number<int>(a, v.substr(0, x)), h = parse_number<int>(a, v.substr(x + 1));
            if (w < 16 || h < 16 || w > 16384 || h > 16384) throw UsageError("--size: W and H must be in 16..16384");
            o.ranges.photo_size = {w, h};
        } else if (a == "--scale") {
            const std::string_view v = value();
            const auto c = v.find(':');
            if (c == std::string_view::npos) throw UsageError("--scale: expected MIN:MAX");
            o.ranges.scale_min = parse_number<double>(a, v.substr(0, c));
            o.ranges.scale_max = parse_number<double>(a, v.substr(c + 1));
            if (!(0 < o.ranges.scale_min && o.ranges.scale_min <= o.ranges.scale_max))
                throw UsageError("--scale: need 0 < MIN <= MAX");
        } else if (a == "--rotation") {
            o.ranges.rotation_max_deg = parse_number<double>(a, value());
            if (o.ranges.rotation_max_deg < 0) throw UsageError("--rotation must be >= 0");
        } else if (a == "--tilt") {
            o.ranges.tilt_max = parse_number<double>(a, value());
            if (o.ranges.tilt_max < 0 || o.ranges.tilt_max > 0.5) throw UsageError("--tilt must be in 0..0.5");
        } else if (a == "--cutoff") {
            o.ranges.cutoff_probability = parse_number<double>(a, value());
            if (o.ranges.cutoff_probability < 0 || o.ranges.cutoff_probability > 1)
                throw UsageError("--cutoff must be in 0..1");
        } else if (a == "--prefix") {
            o.prefix = std::string(value());
            if (o.prefix.empty() || o.prefix.find_first_of("/\\") != std::string::npos)
                throw UsageError("--prefix must be a non-empty file name part");
        } else if (a == "--corners") {
            o.corners = true;
        } else if (a == "--verbose") {
            o.verbose = true;
        } else {
            throw UsageError("unknown argument: '" + std::string(a) + "'");
        }
    }
    if (!have_gallery) throw UsageError("--gallery DIR is required");
    if (!have_out) throw UsageError("--out DIR is required");
    if (o.negative_count && *o.negative_count > 0 && o.negatives.empty())
        throw UsageError("--negative-count needs --negatives DIR");
    return o;
}

void write_file(const fs::path& p, const std::vector<unsigned char>& bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    if (!f) throw std::runtime_error("cannot write " + p.string());
}

int run(const Options& o) {
    const std::vector<fs::path> gallery = list_images(o.gallery, "--gallery");
    std::vector<fs::path> negatives;
    if (!o.negatives.empty()) negatives = list_images(o.negatives, "--negatives");
    const int n_neg = o.negative_count.value_or(int(negatives.size()));

    cv::RNG rng(synth::mix_seed(o.seed));
    std::vector<Job> jobs;
    std::vector<size_t> order;
    for (int k = 0; k < o.count; ++k) {
        if (size_t(k) % gallery.size() == 0) {  // new cycle: fresh seeded order
            order.resize(gallery.size());
            for (size_t i = 0; i < order.size(); ++i) order[i] = i;
            shuffle(order, rng);
        }
        const fs::path& p = gallery[order[size_t(k) % gallery.size()]];
        jobs.push_back({p, p.stem().string()});
    }
    for (int k = 0; k < n_neg; ++k) jobs.push_back({negatives[size_t(k) % negatives.size()], "-"});
    shuffle(jobs, rng);  // interleave negatives with positives

    std::error_code ec;
    fs::create_directories(o.out, ec);
    if (!fs::is_directory(o.out))
        throw std::runtime_error("--out: cannot create directory " + o.out.string() +
                                 (ec ? ": " + ec.message() : std::string()));
    const fs::path truth_path = o.out / "truth.tsv";
    std::ofstream truth(truth_path, std::ios::app);
    if (!truth) throw std::runtime_error("cannot open " + truth_path.string() + " for appending");

    const int digits = std::max(4, int(std::to_string(jobs.size()).size()));
    for (size_t i = 0; i < jobs.size(); ++i) {
        const Job& job = jobs[i];
        const cv::Mat item = cv::imread(job.image.string(), cv::IMREAD_COLOR);
        if (item.empty()) throw std::runtime_error("cannot read image " + job.image.string());

        const std::uint64_t qseed = synth::mix_seed(o.seed ^ synth::mix_seed(i + 1));
        const auto [warp, degrade] = synth::random_params(o.ranges, qseed, item.size());
        const cv::Mat bg = synth::clutter_background(o.ranges.photo_size, synth::mix_seed(qseed + 1));
        const synth::Photo photo = synth::render(item, bg, warp, degrade);

        std::string num = std::to_string(i + 1);
        num.insert(0, size_t(digits) - std::min(num.size(), size_t(digits)), '0');
        const std::string name = o.prefix + "-" + num;
        write_file(o.out / (name + ".jpg"), photo.jpeg);
        truth << name << ".jpg\t" << job.truth << '\n';
        if (o.corners && job.truth != "-") {
            std::ofstream cf(o.out / (name + ".corners.txt"), std::ios::trunc);
            for (const auto& c : photo.corners) cf << c.x << ' ' << c.y << '\n';
            if (!cf) throw std::runtime_error("cannot write corners for " + name);
        }
        if (o.verbose) {
            char buf[320];
            std::snprintf(buf, sizeof buf,
                          "%s.jpg\t%s\tscale=%.3f rot=%.1f tilt=(%.3f,%.3f) centre=(%.0f,%.0f) "
                          "blur=%.2f noise=%.2f bright=%.1f contrast=%.3f q=%d",
                          name.c_str(), job.truth.c_str(), warp.scale, warp.rotation_deg, warp.tilt_x,
                          warp.tilt_y, double(warp.center.x), double(warp.center.y), degrade.blur_sigma,
                          degrade.noise_sigma, degrade.brightness, degrade.contrast, degrade.jpeg_quality);
            std::cout << buf << '\n';
        }
    }
    truth.flush();
    if (!truth) throw std::runtime_error("cannot write " + truth_path.string());
    std::cout << "sightline-synth: wrote " << jobs.size() << " queries (" << o.count << " positive, " << n_neg
              << " negative) to " << o.out.string() << '\n';
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    try {
        o = parse_args(argc, argv);
    } catch (const UsageError& e) {
        std::cerr << "sightline-synth: " << e.what() << "\n"
                  << "usage: sightline-synth --gallery DIR --out DIR [options]   (--help for all options)\n";
        return kExitUsage;
    }
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::cerr << "sightline-synth: error: " << e.what() << '\n';
        return kExitFailure;
    }
}
