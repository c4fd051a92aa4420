// features-orb: OpenCV's ORB (oriented FAST + rotated BRIEF), 32-byte binary descriptors.
#include <opencv2/features2d.hpp>
#include <sightline/keypoint_grid.hpp>
#include <sightline/plugin.hpp>

#include <algorithm>
#include <array>
#include <sstream>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;

class OrbExtractor final : public sightline::FeatureExtractor {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description = "OpenCV ORB keypoints with 256-bit rBRIEF descriptors";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 9> keys{{
            {.name = "max_features", .type = ConfigType::integer, .default_value = "1000", .min = 1, .max = 100000,
             .description = "keep at most this many keypoints, strongest first"},
            {.name = "scale_factor", .type = ConfigType::number, .default_value = "1.2", .min = 1.01, .max = 2.0,
             .description = "pyramid decimation ratio; larger is faster but matches scale changes less well"},
            {.name = "levels", .type = ConfigType::integer, .default_value = "8", .min = 1, .max = 32,
             .description = "number of pyramid levels"},
            {.name = "edge_threshold", .type = ConfigType::integer, .default_value = "31", .min = 1, .max = 256,
             .description = "border in pixels where no keypoint is detected; keep >= patch_size"},
            {.name = "fast_threshold", .type = ConfigType::integer, .default_value = "20", .min = 1, .max = 255,
             .description = "FAST corner threshold; lower finds more keypoints in low contrast"},
            {.name = "patch_size", .type = ConfigType::integer, .default_value = "31", .min = 2, .max = 256,
             .description = "size of the patch the descriptor samples"},
            {.name = "score_type", .type = ConfigType::string, .default_value = "harris", .choices = "harris|fast",
             .description = "how keypoints are ranked"},
            {.name = "grid", .type = ConfigType::integer, .default_value = "1", .min = 1, .max = 64,
             .description = "keep the strongest keypoints per cell of a grid x grid layout, so a textured "
                            "background cannot take every keypoint from the object (1: strongest overall)"},
            {.name = "oversample", .type = ConfigType::number, .default_value = "4", .min = 1, .max = 20,
             .description = "with grid > 1, detect this many times max_features candidates before spreading them"},
        }};
        return keys;
    }

    explicit OrbExtractor(sightline::Context& ctx) {
        const auto& c = ctx.config();
        max_features_ = static_cast<int>(c.get_int("max_features"));
        scale_factor_ = c.get_double("scale_factor");
        levels_ = static_cast<int>(c.get_int("levels"));
        edge_threshold_ = static_cast<int>(c.get_int("edge_threshold"));
        fast_threshold_ = static_cast<int>(c.get_int("fast_threshold"));
        patch_size_ = static_cast<int>(c.get_int("patch_size"));
        score_type_ = c.get_string("score_type");
        grid_ = static_cast<int>(c.get_int("grid"));
        oversample_ = c.get_double("oversample");
        if (edge_threshold_ < patch_size_ / 2)
            throw sightline::Error(sightline::ErrorCode::invalid_argument,
                                   c.where("edge_threshold") + ": " + c.key_path("edge_threshold") +
                                       ": must be at least patch_size/2 (" + std::to_string(patch_size_ / 2) +
                                       "), found " + std::to_string(edge_threshold_));
        // cv::ORB is not documented as safe for concurrent detectAndCompute on one instance, so
        // each call makes its own (construction is cheap next to extraction).
    }

    sightline::Features extract(const cv::Mat& gray) const override {
        sightline::Features f;
        if (gray.empty()) return f;
        const int candidates = grid_ > 1 ? static_cast<int>(max_features_ * oversample_) : max_features_;
        auto orb = cv::ORB::create(candidates, static_cast<float>(scale_factor_), levels_, edge_threshold_, 0, 2,
                                   score_type_ == "fast" ? cv::ORB::FAST_SCORE : cv::ORB::HARRIS_SCORE,
                                   patch_size_, fast_threshold_);
        if (grid_ <= 1) {
            orb->detectAndCompute(gray, cv::noArray(), f.keypoints, f.descriptors);
            return f;
        }
        std::vector<cv::KeyPoint> all;
        orb->detect(gray, all);
        f.keypoints = spread(all, gray.size());
        orb->compute(gray, f.keypoints, f.descriptors);
        return f;
    }

    std::vector<cv::KeyPoint> spread(std::vector<cv::KeyPoint>& all, cv::Size size) const {
        std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.response > b.response; });
        std::vector<cv::Point2f> points;
        points.reserve(all.size());
        for (const auto& k : all) points.push_back(k.pt);
        std::vector<cv::KeyPoint> kept;
        for (auto i : sightline::spread_over_grid(points, size, grid_, static_cast<std::size_t>(max_features_)))
            kept.push_back(all[i]);
        return kept;
    }

    sightline::DescriptorInfo descriptor_info() const override { return sightline::DescriptorInfo::binary(32); }

    std::string signature() const override {
        std::ostringstream s;
        s << "orb:v1;opencv=" << CV_VERSION_MAJOR << "." << CV_VERSION_MINOR << ";max_features=" << max_features_
          << ";scale_factor=" << scale_factor_ << ";levels=" << levels_ << ";edge_threshold=" << edge_threshold_
          << ";fast_threshold=" << fast_threshold_ << ";patch_size=" << patch_size_ << ";score=" << score_type_
          << ";grid=" << grid_ << ";oversample=" << oversample_;
        return s.str();
    }

    // The sampling pattern (patch size) and the pyramid fix a descriptor's bits; the cap, FAST
    // threshold, border, score and grid only choose the corners.
    std::string descriptor_signature() const override {
        std::ostringstream s;
        s << "orb:v1;opencv=" << CV_VERSION_MAJOR << "." << CV_VERSION_MINOR << ";scale_factor=" << scale_factor_
          << ";levels=" << levels_ << ";patch_size=" << patch_size_;
        return s.str();
    }

private:
    int max_features_ = 1000;
    double scale_factor_ = 1.2;
    int levels_ = 8;
    int edge_threshold_ = 31;
    int fast_threshold_ = 20;
    int patch_size_ = 31;
    std::string score_type_;
    int grid_ = 1;
    double oversample_ = 4;
};

}  // namespace

SIGHTLINE_PLUGIN(features, "orb", OrbExtractor)
