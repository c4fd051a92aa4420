// The Oxford affine sequences on disk: which ones exist, their images and ground truth.
#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <sstream>

#include "features_bench.hpp"

namespace sightline::bench {

namespace {

constexpr int kImages = 6;

// The eight sequences of Mikolajczyk et al. 2005, in the order the plot shows them. Amounts are
// given only where the dataset's README states them.
struct Known {
    const char* name;
    const char* change;
    std::array<const char*, 5> amounts;
};
constexpr Known kKnown[] = {
    {"graf", "viewpoint", {"20°", "30°", "40°", "50°", "60°"}},
    {"wall", "viewpoint", {"20°", "30°", "40°", "50°", "60°"}},
    {"boat", "zoom + rotation", {"×1.12", "×1.38", "×1.9", "×2.35", "×2.8"}},
    {"bark", "zoom + rotation", {}},
    {"bikes", "blur", {"level 2", "level 3", "level 4", "level 5", "level 6"}},
    {"trees", "blur", {}},
    {"leuven", "light", {}},
    {"ubc", "JPEG compression", {}},
};

// The published files are PPM/PGM; the copy in shared/data is PNG. Either works.
fs::path image_path(const fs::path& dir, int n) {
    for (const char* ext : {".png", ".ppm", ".pgm"}) {
        fs::path p = dir / ("img" + std::to_string(n) + ext);
        if (fs::is_regular_file(p)) return p;
    }
    return {};
}

fs::path homography_path(const fs::path& dir, int n) {
    return dir / ("H1to" + std::to_string(n) + "p");
}

bool complete(const fs::path& dir) {
    for (int n = 1; n <= kImages; ++n)
        if (image_path(dir, n).empty() || (n > 1 && !fs::is_regular_file(homography_path(dir, n))))
            return false;
    return true;
}

cv::Matx33d read_homography(const fs::path& file) {
    std::ifstream in(file);
    if (!in) throw UsageError("cannot read " + file.string());
    std::stringstream text;
    text << in.rdbuf();
    std::istringstream values(text.str());
    values.imbue(std::locale::classic());
    std::vector<double> v;
    for (double x; values >> x;) v.push_back(x);
    const bool finite = std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
    if (!values.eof() || v.size() != 9 || !finite)
        throw UsageError(file.string() + ": expected a 3x3 matrix of 9 numbers");
    cv::Matx33d H(v.data());
    if (std::abs(cv::determinant(H)) < 1e-12)
        throw UsageError(file.string() + ": singular homography");
    return H;
}

}  // namespace

SequenceInfo sequence_info(const std::string& name) {
    for (const auto& k : kKnown) {
        if (name != k.name) continue;
        SequenceInfo info{k.change, {}};
        if (k.amounts[0])
            for (const char* a : k.amounts) info.amounts.emplace_back(a);
        return info;
    }
    return {};
}

std::vector<std::string> default_sequences(const fs::path& data) {
    std::vector<std::string> out;
    for (const auto& k : kKnown)
        if (complete(data / k.name)) out.emplace_back(k.name);
    std::vector<std::string> others;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(data, ec)) {
        const std::string name = e.path().filename().string();
        if (e.is_directory() && sequence_info(name).change.empty() && complete(e.path()))
            others.push_back(name);
    }
    std::sort(others.begin(), others.end());
    out.insert(out.end(), others.begin(), others.end());
    return out;
}

Sequence load_sequence(const fs::path& data, const std::string& name) {
    Sequence s;
    s.name = name;
    s.dir = data / name;
    if (!fs::is_directory(s.dir)) throw UsageError("no sequence directory " + s.dir.string());
    for (int n = 1; n <= kImages; ++n) {
        fs::path p = image_path(s.dir, n);
        if (p.empty())
            throw UsageError(s.dir.string() + ": img" + std::to_string(n) + ".png is missing");
        cv::Mat gray = cv::imread(p.string(), cv::IMREAD_GRAYSCALE);
        if (gray.empty()) throw UsageError("cannot decode " + p.string());
        s.images.push_back(std::move(gray));
        if (n > 1) s.homographies.push_back(read_homography(homography_path(s.dir, n)));
    }
    return s;
}

}  // namespace sightline::bench
