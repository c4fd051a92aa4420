#pragma once
#include <opencv2/core.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "sightline/plugin_base.hpp"

namespace sightline {

struct DescriptorInfo {
    int size = 0;              // bytes for CV_8U, floats for CV_32F
    int type = CV_8U;          // CV_8U (binary) or CV_32F
    int norm = cv::NORM_HAMMING;  // cv::NORM_HAMMING or cv::NORM_L2

    static DescriptorInfo binary(int bytes) { return {bytes, CV_8U, cv::NORM_HAMMING}; }
    static DescriptorInfo real(int floats) { return {floats, CV_32F, cv::NORM_L2}; }
};

struct Features {
    std::vector<cv::KeyPoint> keypoints;
    cv::Mat descriptors;  // one row per keypoint, type and width as descriptor_info() says
};

// One method does the work (OpenCV's Feature2D, COLMAP's FeatureExtractor).
class SIGHTLINE_API FeatureExtractor : public Plugin {
public:
    // gray: CV_8UC1, already at the pipeline's working size. Returns at most the configured number
    // of features; an image without features gives empty Features, not an error.
    virtual Features extract(const cv::Mat& gray) const = 0;
    virtual DescriptorInfo descriptor_info() const = 0;
    // Name plus every parameter that changes the output, e.g. "orb:v1;max_features=1000;...".
    // Feature records made under another signature are recomputed, never mixed in.
    virtual std::string signature() const = 0;
    // ABI 1.3. The fields of signature() that fix what a descriptor means, leaving out those that
    // only choose which keypoints are kept (thresholds, caps, grids): what is learned from
    // descriptors (a vocabulary) stays valid across those. Same form as signature(); by default
    // all of it, which is always safe.
    virtual std::string descriptor_signature() const { return signature(); }
};

// Empty if an extractor whose descriptor_signature() is `descriptors` makes the same descriptors
// as the one whose signature() was `trained`: the same name and version, and every field of
// `descriptors` present in `trained` with the same value. Otherwise what differs, for an error
// message ("extended=1, trained with extended=0").
inline std::string descriptor_mismatch(std::string_view trained, std::string_view descriptors) {
    auto fields = [](std::string_view s) {
        std::vector<std::string_view> out;
        for (std::size_t start = 0; start <= s.size();) {
            std::size_t end = s.find(';', start);
            if (end == std::string_view::npos) end = s.size();
            out.push_back(s.substr(start, end - start));
            start = end + 1;
        }
        return out;
    };
    const auto have = fields(trained), want = fields(descriptors);
    if (have.front() != want.front())
        return std::string(want.front()) + ", trained with " + std::string(have.front());
    for (std::size_t i = 1; i < want.size(); ++i) {
        const std::size_t eq = want[i].find('=');
        const auto key = eq == std::string_view::npos ? want[i] : want[i].substr(0, eq + 1);
        std::string_view found;
        for (std::size_t j = 1; j < have.size() && found.empty(); ++j)
            if (have[j].substr(0, key.size()) == key) found = have[j];
        if (found != want[i])
            return std::string(want[i]) + ", trained with " +
                   (found.empty() ? "no " + std::string(want[i].substr(0, eq)) : std::string(found));
    }
    return {};
}

}  // namespace sightline
