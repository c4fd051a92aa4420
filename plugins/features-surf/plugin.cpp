// features-surf: our own SURF (surf.hpp), since Debian's OpenCV has no nonfree xfeatures2d.
#include <array>
#include <sightline/plugin.hpp>
#include <sstream>

#include "surf.hpp"

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;

class SurfExtractor final : public sightline::FeatureExtractor {
  public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description =
        "SURF (Bay et al. 2008): box-filter Hessian blobs, Haar-wavelet descriptors of 64 or 128 "
        "floats";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 10> keys{{
            {.name = "hessian_threshold",
             .type = ConfigType::number,
             .default_value = "100",
             .min = 0,
             .max = 1e9,
             .description =
                 "keep blobs whose det(Hessian) exceeds this (intensities 0..255, area-normalised "
                 "filters); lower finds more in low contrast"},
            {.name = "octaves",
             .type = ConfigType::integer,
             .default_value = "4",
             .min = 1,
             .max = 8,
             .description = "scale octaves; each doubles the filter sizes (9-27 px, 15-51, 27-99, "
                            "51-195 ...)"},
            {.name = "intervals",
             .type = ConfigType::integer,
             .default_value = "4",
             .min = 3,
             .max = 8,
             .description =
                 "filter sizes per octave; all but the first and last are searched for blobs"},
            {.name = "init_step",
             .type = ConfigType::integer,
             .default_value = "1",
             .min = 1,
             .max = 4,
             .description = "sampling step of the first octave in pixels (2 is faster, finds fewer "
                            "small blobs)"},
            {.name = "extended",
             .type = ConfigType::boolean,
             .default_value = "false",
             .description = "128-dimensional descriptor instead of 64"},
            {.name = "upright",
             .type = ConfigType::boolean,
             .default_value = "false",
             .description =
                 "skip the orientation (U-SURF): faster, for photos that are never rotated"},
            {.name = "max_features",
             .type = ConfigType::integer,
             .default_value = "2000",
             .min = 0,
             .max = 100000,
             .description = "keep at most this many keypoints, strongest first (0: every one above "
                            "the threshold)"},
            {.name = "grid",
             .type = ConfigType::integer,
             .default_value = "1",
             .min = 1,
             .max = 64,
             .description = "with max_features, keep the strongest per cell of a grid x grid layout, "
                            "so a busy background cannot take every keypoint from a small or "
                            "low-contrast object (1: strongest overall)"},
            {.name = "sign_weight",
             .type = ConfigType::number,
             .default_value = "0",
             .min = 0,
             .max = 0.9,
             .description =
                 "append the sign of the Laplacian with this weight (descriptor stays unit "
                 "length); "
                 "opposite-contrast blobs then never look alike to an L2 matcher (0: off)"},
            {.name = "presmooth",
             .type = ConfigType::number,
             .default_value = "1.0",
             .min = 0,
             .max = 5,
             .description =
                 "Gaussian sigma applied before the box filters; steadier blob positions on sharp "
                 "detail (0: none, as in the paper)"},
        }};
        return keys;
    }

    explicit SurfExtractor(sightline::Context& ctx) {
        const auto& c = ctx.config();
        p_.hessian_threshold = c.get_double("hessian_threshold");
        p_.octaves = static_cast<int>(c.get_int("octaves"));
        p_.intervals = static_cast<int>(c.get_int("intervals"));
        p_.init_step = static_cast<int>(c.get_int("init_step"));
        p_.extended = c.get_bool("extended");
        p_.upright = c.get_bool("upright");
        p_.max_features = static_cast<int>(c.get_int("max_features"));
        p_.grid = static_cast<int>(c.get_int("grid"));
        p_.sign_weight = c.get_double("sign_weight");
        p_.presmooth = c.get_double("presmooth");
    }

    sightline::Features extract(const cv::Mat& gray) const override {
        sightline::Features f;
        sightline::surf::detect_and_describe(gray, p_, f.keypoints, f.descriptors);
        return f;
    }

    sightline::DescriptorInfo descriptor_info() const override {
        return sightline::DescriptorInfo::real(sightline::surf::descriptor_size(p_));
    }

    std::string signature() const override {
        std::ostringstream s;
        s << "surf:v3;hessian_threshold=" << p_.hessian_threshold << ";octaves=" << p_.octaves
          << ";intervals=" << p_.intervals << ";init_step=" << p_.init_step
          << ";extended=" << p_.extended << ";upright=" << p_.upright
          << ";max_features=" << p_.max_features << ";sign_weight=" << p_.sign_weight
          << ";presmooth=" << p_.presmooth;
        if (p_.grid > 1) s << ";grid=" << p_.grid;  // absent at 1, so existing records stay valid
        return s.str();
    }

    // The threshold, octaves, sampling step, cap and grid choose which blobs are described, not how.
    std::string descriptor_signature() const override {
        std::ostringstream s;
        s << "surf:v3;extended=" << p_.extended << ";upright=" << p_.upright << ";sign_weight=" << p_.sign_weight
          << ";presmooth=" << p_.presmooth;
        return s.str();
    }

  private:
    sightline::surf::Params p_;
};

}  // namespace

SIGHTLINE_PLUGIN(features, "surf", SurfExtractor)
