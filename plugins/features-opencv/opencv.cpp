// features-opencv: OpenCV's own detectors/descriptors that Debian's build ships (SIFT, AKAZE,
// BRISK, KAZE), chosen by `algorithm:`. Only the keys that matter for the chosen algorithm change
// its output and enter the signature.
#include <opencv2/features2d.hpp>
#include <sightline/plugin.hpp>

#include <algorithm>
#include <array>
#include <numeric>
#include <sstream>

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;

class OpenCvExtractor final : public sightline::FeatureExtractor {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description = "OpenCV SIFT, AKAZE, BRISK or KAZE, chosen by `algorithm`";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 9> keys{{
            {.name = "algorithm", .type = ConfigType::string, .required = true, .choices = "sift|akaze|brisk|kaze",
             .description = "which OpenCV feature algorithm"},
            {.name = "max_features", .type = ConfigType::integer, .default_value = "1000", .min = 1, .max = 100000,
             .description = "keep at most this many keypoints, strongest first"},
            {.name = "threshold", .type = ConfigType::number, .default_value = "-1", .min = -1, .max = 1000,
             .description = "detector threshold, -1 for the algorithm's default (SIFT contrast 0.04, AKAZE "
                            "0.001, BRISK 30, KAZE 0.001); lower finds more keypoints in low contrast"},
            {.name = "octaves", .type = ConfigType::integer, .default_value = "4", .min = 1, .max = 12,
             .description = "AKAZE/BRISK/KAZE scale-space octaves"},
            {.name = "octave_layers", .type = ConfigType::integer, .default_value = "-1", .min = -1, .max = 12,
             .description = "layers per octave, -1 for the default (SIFT 3, AKAZE/KAZE 4)"},
            {.name = "sigma", .type = ConfigType::number, .default_value = "1.6", .min = 0.5, .max = 5,
             .description = "SIFT: Gaussian sigma at octave 0"},
            {.name = "edge_threshold", .type = ConfigType::number, .default_value = "10", .min = 1, .max = 100,
             .description = "SIFT: edge-response rejection threshold"},
            {.name = "upright", .type = ConfigType::boolean, .default_value = "false",
             .description = "AKAZE/KAZE: skip orientation (faster; only for photos taken upright)"},
            {.name = "root_sift", .type = ConfigType::boolean, .default_value = "false",
             .description = "SIFT: L1-normalise and square-root descriptors (RootSIFT, better under L2)"},
        }};
        return keys;
    }

    explicit OpenCvExtractor(sightline::Context& ctx) {
        const auto& c = ctx.config();
        algorithm_ = c.get_string("algorithm");
        max_features_ = static_cast<int>(c.get_int("max_features"));
        threshold_ = c.get_double("threshold");
        octaves_ = static_cast<int>(c.get_int("octaves"));
        layers_ = static_cast<int>(c.get_int("octave_layers"));
        sigma_ = c.get_double("sigma");
        edge_ = c.get_double("edge_threshold");
        upright_ = c.get_bool("upright");
        root_sift_ = c.get_bool("root_sift");
        if (root_sift_ && algorithm_ != "sift")
            throw sightline::Error(sightline::ErrorCode::invalid_argument,
                                   c.where("root_sift") + ": " + c.key_path("root_sift") +
                                       ": applies to algorithm sift only, found algorithm " + algorithm_);
        make();  // fail at start-up, not on the first request, if OpenCV refuses the parameters
    }

    sightline::Features extract(const cv::Mat& gray) const override {
        sightline::Features f;
        if (gray.empty()) return f;
        auto algo = make();
        std::vector<cv::KeyPoint> kps;
        algo->detect(gray, kps);
        if (static_cast<int>(kps.size()) > max_features_) {
            std::stable_sort(kps.begin(), kps.end(), [](const auto& a, const auto& b) { return a.response > b.response; });
            kps.resize(static_cast<std::size_t>(max_features_));
        }
        algo->compute(gray, kps, f.descriptors);
        f.keypoints = std::move(kps);
        if (f.descriptors.empty()) {
            f.keypoints.clear();
            f.descriptors = cv::Mat(0, descriptor_info().size, descriptor_info().type);
            return f;
        }
        if (root_sift_) {
            for (int r = 0; r < f.descriptors.rows; ++r) {
                cv::Mat row = f.descriptors.row(r);
                double l1 = cv::norm(row, cv::NORM_L1);
                if (l1 > 0) row /= l1;
                cv::sqrt(row, row);
            }
        }
        return f;
    }

    sightline::DescriptorInfo descriptor_info() const override {
        if (algorithm_ == "sift") return sightline::DescriptorInfo::real(128);
        if (algorithm_ == "kaze") return sightline::DescriptorInfo::real(64);
        if (algorithm_ == "akaze") return sightline::DescriptorInfo::binary(61);
        return sightline::DescriptorInfo::binary(64);  // brisk
    }

    std::string signature() const override {
        std::ostringstream s;
        s << "opencv-" << algorithm_ << ":v1;opencv=" << CV_VERSION_MAJOR << "." << CV_VERSION_MINOR
          << ";max_features=" << max_features_ << ";threshold=" << threshold_;
        if (algorithm_ == "sift")
            s << ";layers=" << layers_ << ";sigma=" << sigma_ << ";edge=" << edge_ << ";root=" << root_sift_;
        else
            s << ";octaves=" << octaves_ << ";layers=" << layers_ << ";upright=" << upright_;
        return s.str();
    }

    // The cap, detector threshold and scale-space sampling choose the keypoints; the smoothing,
    // RootSIFT and upright fix what their descriptors mean.
    std::string descriptor_signature() const override {
        std::ostringstream s;
        s << "opencv-" << algorithm_ << ":v1;opencv=" << CV_VERSION_MAJOR << "." << CV_VERSION_MINOR;
        if (algorithm_ == "sift")
            s << ";sigma=" << sigma_ << ";root=" << root_sift_;
        else
            s << ";upright=" << upright_;
        return s.str();
    }

private:
    cv::Ptr<cv::Feature2D> make() const {
        if (algorithm_ == "sift")
            return cv::SIFT::create(0, layers_ < 0 ? 3 : layers_, threshold_ < 0 ? 0.04 : threshold_, edge_, sigma_);
        if (algorithm_ == "akaze")
            return cv::AKAZE::create(upright_ ? cv::AKAZE::DESCRIPTOR_MLDB_UPRIGHT : cv::AKAZE::DESCRIPTOR_MLDB, 0, 3,
                                     static_cast<float>(threshold_ < 0 ? 0.001 : threshold_), octaves_,
                                     layers_ < 0 ? 4 : layers_);
        if (algorithm_ == "kaze")
            return cv::KAZE::create(false, upright_, static_cast<float>(threshold_ < 0 ? 0.001 : threshold_), octaves_,
                                    layers_ < 0 ? 4 : layers_);
        return cv::BRISK::create(threshold_ < 0 ? 30 : static_cast<int>(threshold_), octaves_);
    }

    std::string algorithm_;
    int max_features_ = 1000;
    double threshold_ = -1;
    int octaves_ = 4;
    int layers_ = -1;
    double sigma_ = 1.6;
    double edge_ = 10;
    bool upright_ = false;
    bool root_sift_ = false;
};

}  // namespace

SIGHTLINE_PLUGIN(features, "opencv", OpenCvExtractor)
