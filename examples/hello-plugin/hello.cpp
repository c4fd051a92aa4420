// features-hello: the smallest useful feature plugin. It samples a regular grid of points and
// describes each by the normalised 8x8 pixels around it (64 floats, compared with L2). It has no
// invariance to rotation or scale: it shows the SDK, not a good algorithm.
#include <opencv2/imgproc.hpp>
#include <sightline/plugin.hpp>

#include <array>
#include <string>

namespace {

class HelloExtractor final : public sightline::FeatureExtractor {
public:
    static constexpr const char* version = "0.1.0";
    static constexpr const char* description = "grid-sampled 8x8 patch descriptors (an SDK example)";
    static sightline::ConfigSchema config_schema() {
        static const std::array<sightline::ConfigKey, 2> keys{{
            {.name = "grid", .type = sightline::ConfigType::integer, .default_value = "16", .min = 2, .max = 128,
             .description = "points per side of the sampling grid"},
            {.name = "patch", .type = sightline::ConfigType::integer, .default_value = "24", .min = 8, .max = 128,
             .description = "side of the square patch each descriptor summarises, in pixels"},
        }};
        return keys;
    }

    explicit HelloExtractor(sightline::Context& ctx)
        : grid_(static_cast<int>(ctx.config().get_int("grid"))), patch_(static_cast<int>(ctx.config().get_int("patch"))) {
        ctx.logger()->debug("grid {} x {}, patch {} px", grid_, grid_, patch_);
    }

    sightline::Features extract(const cv::Mat& gray) const override {
        sightline::Features f;
        const int half = patch_ / 2;
        if (gray.cols <= patch_ || gray.rows <= patch_) return f;
        f.descriptors.create(0, 64, CV_32F);
        for (int gy = 0; gy < grid_; ++gy)
            for (int gx = 0; gx < grid_; ++gx) {
                const int x = half + (gray.cols - patch_) * gx / (grid_ - 1);
                const int y = half + (gray.rows - patch_) * gy / (grid_ - 1);
                cv::Mat small, row;
                cv::resize(gray(cv::Rect(x - half, y - half, patch_, patch_)), small, cv::Size(8, 8), 0, 0, cv::INTER_AREA);
                small.reshape(1, 1).convertTo(row, CV_32F);
                cv::Scalar mean, stddev;
                cv::meanStdDev(row, mean, stddev);
                if (stddev[0] < 1.0) continue;  // a flat patch describes nothing
                row = (row - mean[0]) / (stddev[0] * 8.0);  // zero mean, unit length
                f.keypoints.emplace_back(cv::Point2f(static_cast<float>(x), static_cast<float>(y)), static_cast<float>(patch_));
                f.descriptors.push_back(row);
            }
        return f;
    }

    sightline::DescriptorInfo descriptor_info() const override { return sightline::DescriptorInfo::real(64); }
    std::string signature() const override {
        return "hello:v1;grid=" + std::to_string(grid_) + ";patch=" + std::to_string(patch_);
    }

private:
    int grid_;
    int patch_;
};

}  // namespace

SIGHTLINE_PLUGIN(features, "hello", HelloExtractor)
