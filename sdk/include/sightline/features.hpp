#pragma once
#include <opencv2/core.hpp>

#include <string>
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
};

}  // namespace sightline
