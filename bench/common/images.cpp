// Image scanning, item ids, sidecar metadata and item images for rendering.
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <fstream>
#include <set>

#include "bench_common.hpp"

namespace sightline::bench {

namespace {
constexpr std::size_t kMaxIdLength = 128;
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

}  // namespace sightline::bench
