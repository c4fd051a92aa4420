// features-opencv: every algorithm extracts what its descriptor_info() promises, deterministically
// and within max_features; bad parameter combinations are refused with the key named.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "sightline/host/plugin_registry.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

class FeaturesOpenCv : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        registry_.load_all();
        plugin_ = registry_.find(PluginKind::features, "opencv");
        ASSERT_NE(plugin_, nullptr) << "features-opencv not built in " << plugin_dir();
        cv::Mat img = cv::imread(gallery_images().at(0).string(), cv::IMREAD_GRAYSCALE);
        ASSERT_FALSE(img.empty());
        cv::resize(img, gray_, {480, 240});
    }
    std::shared_ptr<FeatureExtractor> make(const std::string& yaml) {
        MinimalContext ctx(Config(YAML::Load(yaml), "t.yaml", "features", plugin_->schema()));
        return registry_.create<PluginKind::features>(*plugin_, ctx);
    }

    PluginRegistry registry_{std::vector<fs::path>{plugin_dir()}};
    const LoadedPlugin* plugin_ = nullptr;
    cv::Mat gray_;
};

TEST_P(FeaturesOpenCv, ExtractsWhatDescriptorInfoPromises) {
    auto x = make("{type: opencv, algorithm: " + GetParam() + ", max_features: 300}");
    Features f = x->extract(gray_);
    const DescriptorInfo info = x->descriptor_info();
    ASSERT_GT(f.keypoints.size(), 20u) << GetParam();
    EXPECT_LE(f.keypoints.size(), 300u);
    EXPECT_EQ(f.descriptors.rows, static_cast<int>(f.keypoints.size()));
    EXPECT_EQ(f.descriptors.type(), info.type);
    EXPECT_EQ(f.descriptors.cols, info.size);
    EXPECT_THAT(x->signature(), HasSubstr("opencv-" + GetParam()));

    Features again = x->extract(gray_);
    ASSERT_EQ(again.keypoints.size(), f.keypoints.size());
    EXPECT_EQ(cv::norm(again.descriptors, f.descriptors, cv::NORM_INF), 0.0);
}

TEST_P(FeaturesOpenCv, EmptyImageGivesNoFeatures) {
    auto x = make("{type: opencv, algorithm: " + GetParam() + "}");
    Features f = x->extract(cv::Mat());
    EXPECT_TRUE(f.keypoints.empty());
    EXPECT_TRUE(f.descriptors.empty());
}

INSTANTIATE_TEST_SUITE_P(Algorithms, FeaturesOpenCv, ::testing::Values("sift", "akaze", "brisk", "kaze"));

TEST(FeaturesOpenCvConfig, RootSiftOnlyAppliesToSift) {
    PluginRegistry registry{std::vector<fs::path>{plugin_dir()}};
    registry.load_all();
    const auto* plugin = registry.find(PluginKind::features, "opencv");
    ASSERT_NE(plugin, nullptr);
    MinimalContext ctx(Config(YAML::Load("{type: opencv, algorithm: akaze, root_sift: true}"), "t.yaml",
                              "pipelines.p.features", plugin->schema()));
    Error e = capture_error([&] { registry.create<PluginKind::features>(*plugin, ctx); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("pipelines.p.features.root_sift"));
    EXPECT_THAT(e.what(), HasSubstr("sift only"));
}

TEST(FeaturesOpenCvConfig, RootSiftDescriptorsHaveUnitL2Norm) {
    PluginRegistry registry{std::vector<fs::path>{plugin_dir()}};
    registry.load_all();
    const auto* plugin = registry.find(PluginKind::features, "opencv");
    ASSERT_NE(plugin, nullptr);
    MinimalContext ctx(Config(YAML::Load("{type: opencv, algorithm: sift, root_sift: true, max_features: 50}"),
                              "t.yaml", "features", plugin->schema()));
    auto x = registry.create<PluginKind::features>(*plugin, ctx);
    cv::Mat img = cv::imread(gallery_images().at(1).string(), cv::IMREAD_GRAYSCALE);
    Features f = x->extract(img);
    ASSERT_GT(f.descriptors.rows, 0);
    // sqrt of an L1-normalised non-negative vector has L2 norm 1.
    for (int r = 0; r < f.descriptors.rows; ++r) EXPECT_NEAR(cv::norm(f.descriptors.row(r), cv::NORM_L2), 1.0, 1e-4);
}

}  // namespace
