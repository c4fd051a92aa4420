// features-surf: blobs found where and as large as they are, repeatable under rotation and
// scaling, unit-length deterministic descriptors, and clear errors for every bad parameter.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/plugin_registry.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

class FeaturesSurf : public ::testing::Test {
  protected:
    void SetUp() override {
        registry_.load_all();
        plugin_ = registry_.find(PluginKind::features, "surf");
        ASSERT_NE(plugin_, nullptr) << "features-surf not built in " << plugin_dir();
    }
    std::shared_ptr<FeatureExtractor> make(const std::string& yaml) {
        MinimalContext ctx(
            Config(YAML::Load(yaml), "surf.yaml", "pipelines.p.features", plugin_->schema()));
        return registry_.create<PluginKind::features>(*plugin_, ctx);
    }
    // What the host says of a features section before it would call the factory.
    std::string errors_for(const std::string& yaml) {
        std::vector<std::string> errors;
        validate_section(YAML::Load(yaml), plugin_->schema(), "surf.yaml", "pipelines.p.features",
                         {"type"}, errors);
        std::string all;
        for (const auto& e : errors) all += e + "\n";
        return all;
    }
    static cv::Mat photo() {
        cv::Mat img = cv::imread(gallery_images().at(9).string(), cv::IMREAD_GRAYSCALE);
        cv::Mat out;
        cv::resize(img, out, {640, 480}, 0, 0, cv::INTER_AREA);
        return out;
    }

    PluginRegistry registry_{std::vector<fs::path>{plugin_dir()}};
    const LoadedPlugin* plugin_ = nullptr;
};

// Keypoints of `b` within `tol` px of where `map` puts those of `a`, over the smaller count of
// keypoints whose mapped position falls inside the other image.
double repeatability(const std::vector<cv::KeyPoint>& a, const std::vector<cv::KeyPoint>& b,
                     cv::Size b_size, const std::function<cv::Point2f(cv::Point2f)>& map,
                     double tol = 2.5) {
    std::size_t inside = 0, repeated = 0;
    for (const auto& k : a) {
        const cv::Point2f p = map(k.pt);
        if (p.x < 0 || p.y < 0 || p.x > b_size.width - 1 || p.y > b_size.height - 1) continue;
        ++inside;
        for (const auto& q : b)
            if (cv::norm(q.pt - p) <= tol) {
                ++repeated;
                break;
            }
    }
    const std::size_t n = std::min(inside, b.size());
    return n == 0 ? 0.0 : static_cast<double>(repeated) / static_cast<double>(n);
}

TEST_F(FeaturesSurf, FindsSyntheticBlobsAtTheirPositionAndScale) {
    // Gaussian blobs of known sigma on a flat ground, dark and bright, at non-integer centres.
    cv::Mat img(400, 600, CV_32F, cv::Scalar(128));
    struct Blob {
        cv::Point2f centre;
        double sigma;
        double sign;  // -1 dark, +1 bright
    };
    const std::vector<Blob> blobs{{{100.3f, 100.6f}, 2.5, -1},
                                  {{250.5f, 110.2f}, 4.0, 1},
                                  {{450.7f, 140.4f}, 6.0, -1},
                                  {{150.2f, 290.8f}, 9.0, 1},
                                  {{420.4f, 290.5f}, 13.0, -1}};
    for (const auto& b : blobs)
        for (int y = 0; y < img.rows; ++y)
            for (int x = 0; x < img.cols; ++x) {
                const double d2 =
                    (x - b.centre.x) * (x - b.centre.x) + (y - b.centre.y) * (y - b.centre.y);
                img.at<float>(y, x) +=
                    static_cast<float>(b.sign * 100.0 * std::exp(-d2 / (2 * b.sigma * b.sigma)));
            }
    cv::Mat gray;
    img.convertTo(gray, CV_8U);

    auto surf = make("{type: surf, presmooth: 0, hessian_threshold: 10}");
    Features f = surf->extract(gray);
    ASSERT_FALSE(f.keypoints.empty());
    for (const auto& b : blobs) {
        SCOPED_TRACE("blob sigma " + std::to_string(b.sigma));
        // The strongest response near the centre is the blob (weaker ones sit on its flanks).
        const cv::KeyPoint* best = nullptr;
        for (const auto& k : f.keypoints)
            if (cv::norm(k.pt - b.centre) <= std::max(2.0, 0.5 * b.sigma) &&
                (!best || k.response > best->response))
                best = &k;
        ASSERT_NE(best, nullptr) << "no keypoint near the blob";
        // Position within a fifth of the blob's sigma (a pixel at least). Scale: the Gaussian
        // det(H) of a blob of sigma peaks at s = sigma; the paper's box filters, whose lobes are
        // wider than the derivatives they stand for, peak at a filter size whose nominal scale
        // s = 1.2 L / 9 is 0.72 sigma, at every size (which is what invariance needs).
        EXPECT_LE(cv::norm(best->pt - b.centre), std::max(1.0, 0.2 * b.sigma));
        const double s = best->size / 2.0;
        EXPECT_NEAR(s / b.sigma, 0.72, 0.06) << "found scale " << s;
        // A dark blob has a positive Laplacian.
        EXPECT_EQ(best->class_id, b.sign < 0 ? 1 : -1);
    }
}

TEST_F(FeaturesSurf, KeypointsRepeatUnderRotationBy90Degrees) {
    const cv::Mat a = photo();
    cv::Mat b;
    cv::rotate(a, b, cv::ROTATE_90_CLOCKWISE);
    auto surf = make("{type: surf}");
    Features fa = surf->extract(a), fb = surf->extract(b);
    ASSERT_GT(fa.keypoints.size(), 100u);
    // Clockwise: (x, y) -> (rows - 1 - y, x).
    const double r = repeatability(fa.keypoints, fb.keypoints, b.size(), [&](cv::Point2f p) {
        return cv::Point2f(static_cast<float>(a.rows - 1) - p.y, p.x);
    });
    EXPECT_GE(r, 0.7);
}

TEST_F(FeaturesSurf, OrientationFollowsAnArbitraryRotation) {
    // Rotations that are not multiples of 90 degrees move every Haar sample off the pixel grid.
    // Sampling the wavelets at their exact (sub-pixel) positions and sizes, and the orientation
    // disc every s / 2, put 86-87% of the angles within 10 degrees and the median at 2.6-3.3
    // (it was 73-75% and 4.3-4.9 with samples rounded to pixels, every s).
    const cv::Mat a = photo();
    const cv::Point2f centre(0.5f * static_cast<float>(a.cols - 1),
                             0.5f * static_cast<float>(a.rows - 1));
    auto surf = make("{type: surf}");
    const Features fa = surf->extract(a);
    for (double deg : {30.0, 45.0, 73.0}) {
        SCOPED_TRACE("rotated by " + std::to_string(deg) + " degrees");
        // Clockwise on the screen (y points down), so keypoint angles grow by deg.
        const cv::Matx23d R = cv::getRotationMatrix2D(centre, -deg, 1.0);
        cv::Mat b;
        cv::warpAffine(a, b, R, a.size(), cv::INTER_LINEAR);
        const Features fb = surf->extract(b);
        std::vector<double> errors;
        for (const auto& k : fa.keypoints) {
            const cv::Point2f q(static_cast<float>(R(0, 0) * k.pt.x + R(0, 1) * k.pt.y + R(0, 2)),
                                static_cast<float>(R(1, 0) * k.pt.x + R(1, 1) * k.pt.y + R(1, 2)));
            if (cv::norm(q - centre) > 200) continue;  // stays clear of the black corners
            const cv::KeyPoint* same = nullptr;
            double best = 1.5;
            for (const auto& m : fb.keypoints)
                if (cv::norm(m.pt - q) < best && std::abs(m.size / k.size - 1) < 0.2) {
                    best = cv::norm(m.pt - q);
                    same = &m;
                }
            if (!same) continue;
            errors.push_back(
                std::abs(std::fmod(same->angle - k.angle - deg + 720 + 180, 360.0) - 180));
        }
        ASSERT_GT(errors.size(), 100u);
        std::sort(errors.begin(), errors.end());
        const auto within_10 =
            std::count_if(errors.begin(), errors.end(), [](double e) { return e <= 10; });
        EXPECT_GE(static_cast<double>(within_10) / static_cast<double>(errors.size()), 0.8);
        EXPECT_LE(errors[errors.size() / 2], 4.0);
    }
}

TEST_F(FeaturesSurf, KeypointsRepeatUnderScalingByHalf) {
    const cv::Mat a = photo();
    cv::Mat b;
    cv::resize(a, b, {a.cols / 2, a.rows / 2}, 0, 0, cv::INTER_AREA);
    auto surf = make("{type: surf}");
    Features fa = surf->extract(a), fb = surf->extract(b);
    ASSERT_GT(fb.keypoints.size(), 50u);
    // Every blob of the half-size image must exist in the full one (the reverse cannot hold: the
    // finest detail is gone). Pixel centres: x_half = (x + 0.5) / 2 - 0.5.
    const double r = repeatability(fb.keypoints, fa.keypoints, a.size(), [](cv::Point2f p) {
        return cv::Point2f(2 * p.x + 0.5f, 2 * p.y + 0.5f);
    });
    EXPECT_GE(r, 0.7);
}

TEST_F(FeaturesSurf, DescriptorsAreUnitLengthAndAsDescribed) {
    for (const char* yaml : {"{type: surf}", "{type: surf, extended: true}",
                             "{type: surf, upright: true}", "{type: surf, sign_weight: 0.4}"}) {
        SCOPED_TRACE(yaml);
        auto surf = make(yaml);
        Features f = surf->extract(photo());
        const DescriptorInfo info = surf->descriptor_info();
        ASSERT_GT(f.keypoints.size(), 100u);
        EXPECT_LE(f.keypoints.size(), 2000u);
        EXPECT_EQ(info.type, CV_32F);
        EXPECT_EQ(info.norm, cv::NORM_L2);
        EXPECT_EQ(f.descriptors.type(), CV_32F);
        EXPECT_EQ(f.descriptors.cols, info.size);
        EXPECT_EQ(f.descriptors.rows, static_cast<int>(f.keypoints.size()));
        for (int r = 0; r < f.descriptors.rows; ++r)
            ASSERT_NEAR(cv::norm(f.descriptors.row(r), cv::NORM_L2), 1.0, 1e-4) << "row " << r;
        for (const auto& k : f.keypoints) {
            ASSERT_TRUE(k.class_id == 1 || k.class_id == -1);
            ASSERT_GE(k.angle, 0.f);
            ASSERT_LT(k.angle, 360.f);
        }
    }
    EXPECT_EQ(make("{type: surf}")->descriptor_info().size, 64);
    EXPECT_EQ(make("{type: surf, extended: true}")->descriptor_info().size, 128);
    EXPECT_EQ(make("{type: surf, sign_weight: 0.4}")->descriptor_info().size, 65);
}

TEST_F(FeaturesSurf, StrongestKeptAndSameOutputWhateverTheThreads) {
    const cv::Mat img = photo();
    auto all = make("{type: surf, max_features: 0}");
    auto capped = make("{type: surf, max_features: 150}");
    const int threads = cv::getNumThreads();
    Features f_all = all->extract(img);
    Features f_capped = capped->extract(img);
    cv::setNumThreads(1);
    Features f_one = capped->extract(img);
    cv::setNumThreads(threads);
    ASSERT_GT(f_all.keypoints.size(), 150u);
    ASSERT_EQ(f_capped.keypoints.size(), 150u);
    // The capped set is the 150 strongest of the full set.
    std::vector<float> responses;
    for (const auto& k : f_all.keypoints) responses.push_back(k.response);
    std::sort(responses.rbegin(), responses.rend());
    for (const auto& k : f_capped.keypoints) EXPECT_GE(k.response, responses[149]);

    ASSERT_EQ(f_one.keypoints.size(), f_capped.keypoints.size());
    for (std::size_t i = 0; i < f_one.keypoints.size(); ++i) {
        EXPECT_EQ(f_one.keypoints[i].pt, f_capped.keypoints[i].pt);
        EXPECT_EQ(f_one.keypoints[i].angle, f_capped.keypoints[i].angle);
    }
    EXPECT_EQ(cv::norm(f_one.descriptors, f_capped.descriptors, cv::NORM_INF), 0.0);
}

// The box filters take four columns at a time (SIMD) at sampling steps 1 and 2 and the remaining
// ones singly: shifting the picture moves its columns between the two, which must not change what
// is found. On a black canvas the box sums of a shifted picture are the same integers, so its
// keypoints at steps that divide the shift are the same ones, moved by exactly the shift.
TEST_F(FeaturesSurf, KeypointsFollowAShiftOfThePictureExactly) {
    const cv::Mat img = photo()(cv::Rect(80, 60, 480, 360));
    auto surf = make("{type: surf, max_features: 0}");
    auto extract_at = [&](int dx) {
        cv::Mat canvas(560, 720, CV_8UC1, cv::Scalar(0));
        img.copyTo(canvas(cv::Rect(100 + dx, 100, img.cols, img.rows)));
        return surf->extract(canvas);
    };
    const Features base = extract_at(0);
    for (const int dx : {1, 2, 3, 6}) {
        SCOPED_TRACE("shift " + std::to_string(dx));
        const Features moved = extract_at(dx);
        std::size_t compared = 0;
        for (std::size_t i = 0; i < base.keypoints.size(); ++i) {
            const cv::KeyPoint& k = base.keypoints[i];
            if ((dx % (1 << k.octave)) != 0) continue;  // a coarser sampling grid than the shift
            ++compared;
            std::size_t j = 0;
            while (j < moved.keypoints.size() &&
                   (moved.keypoints[j].octave != k.octave ||
                    cv::norm(moved.keypoints[j].pt -
                             (k.pt + cv::Point2f(static_cast<float>(dx), 0))) > 1e-3))
                ++j;
            ASSERT_LT(j, moved.keypoints.size())
                << "keypoint at " << k.pt << ", octave " << k.octave;
            EXPECT_EQ(moved.keypoints[j].response, k.response);
            EXPECT_EQ(moved.keypoints[j].class_id, k.class_id);
            EXPECT_NEAR(moved.keypoints[j].size, k.size, 1e-4);
            EXPECT_LT(cv::norm(moved.descriptors.row(static_cast<int>(j)),
                               base.descriptors.row(static_cast<int>(i)), cv::NORM_INF),
                      1e-4);
        }
        EXPECT_GT(compared, 150u);
    }
}

// The box filters' integral image holds 32-bit sums that wrap past 2^32, which a white image of
// 4400 x 4400 pixels passes towards its lower right. A picture there must give the features it
// gives on a small white canvas, moved by the offset: box sums are exact modulo 2^32 and no box
// is large enough to reach it.
TEST_F(FeaturesSurf, ExactWhereTheIntegralImagePasses2To32) {
    const cv::Mat img = photo()(cv::Rect(200, 150, 200, 200));
    auto surf = make("{type: surf, octaves: 1, max_features: 0}");
    auto extract_at = [&](cv::Size canvas_size, int at) {
        cv::Mat canvas(canvas_size, CV_8UC1, cv::Scalar(255));
        img.copyTo(canvas(cv::Rect(at, at, img.cols, img.rows)));
        return surf->extract(canvas);
    };
    const int big_at = 4100, small_at = 100;
    // The sums wrap across the picture: below 2^32 at its upper left, above it at its lower right.
    ASSERT_LT(255.0 * big_at * big_at, 4294967296.0);
    ASSERT_GT(255.0 * (big_at + img.cols) * (big_at + img.rows), 4294967296.0);
    const Features big = extract_at({4400, 4400}, big_at);
    const Features small = extract_at({400, 400}, small_at);
    ASSERT_GT(small.keypoints.size(), 50u);
    ASSERT_EQ(big.keypoints.size(), small.keypoints.size());
    const auto shift = static_cast<float>(big_at - small_at);
    for (std::size_t i = 0; i < small.keypoints.size(); ++i) {
        const cv::KeyPoint &b = big.keypoints[i], &s = small.keypoints[i];
        EXPECT_LT(cv::norm(b.pt - (s.pt + cv::Point2f(shift, shift))), 1e-2) << "keypoint " << i;
        EXPECT_EQ(b.response, s.response) << "keypoint " << i;
        EXPECT_LT(cv::norm(big.descriptors.row(static_cast<int>(i)),
                           small.descriptors.row(static_cast<int>(i)), cv::NORM_INF),
                  1e-4)
            << "keypoint " << i;
    }
}

TEST_F(FeaturesSurf, GridKeepsKeypointsOnALowContrastPartOfTheImage) {
    // Left half: the photo at full contrast; right half: the same photo at a tenth of it, as a
    // hazy object beside a busy background. Strongest overall takes (nearly) all from the left.
    cv::Mat img = photo();
    const int half = img.cols / 2;
    cv::Mat right = img.colRange(half, img.cols);
    right.convertTo(right, -1, 0.1, 115);
    auto strongest = make("{type: surf, hessian_threshold: 1, max_features: 300}");
    auto spread = make("{type: surf, hessian_threshold: 1, max_features: 300, grid: 4}");
    auto on_right = [&](const Features& f) {
        return std::count_if(f.keypoints.begin(), f.keypoints.end(),
                             [&](const cv::KeyPoint& k) { return k.pt.x >= static_cast<float>(half); });
    };
    const Features a = strongest->extract(img), b = spread->extract(img);
    ASSERT_EQ(a.keypoints.size(), 300u);
    ASSERT_EQ(b.keypoints.size(), 300u);
    EXPECT_LT(on_right(a), 30);
    EXPECT_GE(on_right(b), 100);  // about half of the 16 cells lie on the right (119 measured)
    EXPECT_NE(spread->signature(), strongest->signature());
    // Still best first, so a later "strongest N" (search_features) means what it says.
    for (std::size_t i = 1; i < b.keypoints.size(); ++i) EXPECT_LE(b.keypoints[i].response, b.keypoints[i - 1].response);
}

TEST_F(FeaturesSurf, EmptyAndFlatImagesGiveNoFeatures) {
    auto surf = make("{type: surf}");
    Features f = surf->extract(cv::Mat());
    EXPECT_TRUE(f.keypoints.empty());
    EXPECT_TRUE(f.descriptors.empty());
    f = surf->extract(cv::Mat(300, 300, CV_8U, cv::Scalar(90)));
    EXPECT_TRUE(f.keypoints.empty());
    f = surf->extract(cv::Mat(5, 7, CV_8U, cv::Scalar(90)));  // smaller than the smallest filter
    EXPECT_TRUE(f.keypoints.empty());
}

TEST_F(FeaturesSurf, SignatureNamesEveryParameter) {
    const std::string sig =
        make("{type: surf, hessian_threshold: 250, extended: true}")->signature();
    for (const char* part : {"surf:v3", "hessian_threshold=250", "octaves=4", "intervals=4",
                             "extended=1", "upright=0", "max_features=2000", "presmooth=1"})
        EXPECT_THAT(sig, HasSubstr(part));
    EXPECT_NE(sig, make("{type: surf}")->signature());
}

// What a vocabulary depends on: the descriptor's own options, not the keypoint selection.
TEST_F(FeaturesSurf, DescriptorSignatureLeavesOutWhatOnlySelectsKeypoints) {
    const auto base = make("{type: surf, hessian_threshold: 5, max_features: 500}");
    const std::string trained = base->signature();
    EXPECT_EQ(descriptor_mismatch(trained, base->descriptor_signature()), "");
    for (const char* same : {"{type: surf, hessian_threshold: 20, max_features: 4000, grid: 8}",
                             "{type: surf, hessian_threshold: 5, octaves: 3, intervals: 5, init_step: 1}"})
        EXPECT_EQ(descriptor_mismatch(trained, make(same)->descriptor_signature()), "") << same;
    EXPECT_EQ(descriptor_mismatch(trained, make("{type: surf, extended: true}")->descriptor_signature()),
              "extended=1, trained with extended=0");
    EXPECT_EQ(descriptor_mismatch(trained, make("{type: surf, presmooth: 0}")->descriptor_signature()),
              "presmooth=0, trained with presmooth=1");
    EXPECT_EQ(descriptor_mismatch(trained, make("{type: surf, upright: true}")->descriptor_signature()),
              "upright=1, trained with upright=0");
}

TEST_F(FeaturesSurf, EveryInvalidParameterIsAClearConfigError) {
    struct Case {
        const char* yaml;
        const char* says;
    };
    for (const Case& c :
         {Case{"{type: surf, hessian_threshold: -1}", "pipelines.p.features.hessian_threshold"},
          Case{"{type: surf, octaves: 0}", "pipelines.p.features.octaves"},
          Case{"{type: surf, octaves: 9}", "pipelines.p.features.octaves"},
          Case{"{type: surf, intervals: 2}", "pipelines.p.features.intervals"},
          Case{"{type: surf, init_step: 0}", "pipelines.p.features.init_step"},
          Case{"{type: surf, extended: maybe}", "pipelines.p.features.extended"},
          Case{"{type: surf, upright: 3}", "pipelines.p.features.upright"},
          Case{"{type: surf, max_features: -5}", "pipelines.p.features.max_features"},
          Case{"{type: surf, grid: 0}", "pipelines.p.features.grid"},
          Case{"{type: surf, sign_weight: 1}", "pipelines.p.features.sign_weight"},
          Case{"{type: surf, presmooth: many}", "pipelines.p.features.presmooth"},
          Case{"{type: surf, hessian_treshold: 200}", "did you mean 'hessian_threshold'"}}) {
        SCOPED_TRACE(c.yaml);
        const std::string errors = errors_for(c.yaml);
        EXPECT_THAT(errors, HasSubstr(c.says));
        EXPECT_THAT(errors, HasSubstr("surf.yaml:1"));
    }
    EXPECT_EQ(errors_for("{type: surf, hessian_threshold: 300, octaves: 3, intervals: 5, "
                         "init_step: 2, extended: true, "
                         "upright: true, max_features: 0, sign_weight: 0.5, presmooth: 0}"),
              "");
}

}  // namespace
