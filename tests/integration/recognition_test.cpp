// End to end: the default pipeline config (SURF + brute force) over a gallery of demo photos,
// queried with synthetic phone photos whose true outline is known. Plus the CLI once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <opencv2/core/utility.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <sightline/synth/synth.hpp>
#include <sstream>

#include "photos.hpp"
#include "sightline/host/host.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::AnyOf;
using ::testing::HasSubstr;

namespace {

constexpr std::size_t kGallerySize = 20;

// The first 20 demo images form the gallery; the rest are "things not in the gallery".
std::vector<fs::path> gallery_part() {
    auto all = gallery_images();
    all.resize(std::min(all.size(), kGallerySize));
    return all;
}
std::vector<fs::path> held_out_part() {
    auto all = gallery_images();
    return std::vector<fs::path>(all.begin() + static_cast<std::ptrdiff_t>(std::min(all.size(), kGallerySize)), all.end());
}

Request request_for(const std::vector<unsigned char>& jpeg, const std::string& id = "q1") {
    Request r;
    r.id = id;
    r.image.assign(jpeg.begin(), jpeg.end());
    r.content_type = "image/jpeg";
    return r;
}

// One Host over the default config (config/default.yaml) with the storage in a temp dir, shared
// by the tests of this process; gtest_discover_tests runs each test in its own process, so every
// test builds its own (≈1 s).
class Recognition : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new TempDir("sightline-recognition");
        LoadedConfig c = load_config_file((source_dir() / "config" / "default.yaml").string());
        apply_override(c, "plugins.paths=[" + yq(plugin_dir()) + "]");
        apply_override(c, "storages.gallery.root=" + (dir_->path() / "gallery").string());
        apply_override(c, "storages.gallery.fsync=false");
        apply_override(c, "limits.workers=2");
        apply_override(c, "logging.level=warn");
        host_ = new Host(std::move(c));
        for (const auto& p : gallery_part())
            host_->gallery().put(p.stem().string(), read_bytes(p), read_text(fs::path(p).replace_extension(".json")));
        auto stats = host_->pipeline().load(host_->gallery(), &host_->workers());
        ASSERT_EQ(stats.computed, kGallerySize);
        ASSERT_EQ(stats.failed, 0u);
    }
    static void TearDownTestSuite() {
        delete host_;
        host_ = nullptr;
        delete dir_;
        dir_ = nullptr;
    }
    void SetUp() override {
        ASSERT_NE(host_, nullptr);
        ASSERT_EQ(host_->pipeline().size(), kGallerySize);
    }
    Pipeline& pipeline() { return host_->pipeline(); }

    static TempDir* dir_;
    static Host* host_;
};
TempDir* Recognition::dir_ = nullptr;
Host* Recognition::host_ = nullptr;

TEST_F(Recognition, UsesTheDefaultPipeline) {
    EXPECT_EQ(host_->default_pipeline(), "surf");
    EXPECT_THAT(pipeline().signature(), HasSubstr("surf:v3"));
    EXPECT_THAT(pipeline().signature(), HasSubstr("max_features=500"));
    EXPECT_EQ(pipeline().settings().working_size, 1536);
    EXPECT_EQ(pipeline().settings().max_upscale, 1.5);
    EXPECT_EQ(pipeline().settings().search_features, 0u);  // every query feature is searched
    EXPECT_EQ(pipeline().settings().verify.estimator, Estimator::usac);
    // index-vocab: word correspondences to RANSAC, confirmed by the stored descriptors.
    EXPECT_FALSE(pipeline().settings().verify.rematch);
    EXPECT_TRUE(pipeline().settings().verify.confirm);
}

struct QueryCase {
    std::size_t item;
    std::uint64_t seed;
    // Cases a pipeline does not pass (only ORB, config/orb.yaml, has any): item 0 is found with
    // ~48 inliers but its outline is 20-35 px off at the corners (inliers sit in the textured lower
    // half); item 19, a blurred forest, gets too few ORB keypoints next to high-contrast clutter.
    // They stay listed and are reported as skipped, so the gap is visible in every run;
    // SIGHTLINE_RUN_KNOWN_GAPS=1 runs them anyway (for whoever tunes the pipeline).
    bool known_gap = false;
};
void PrintTo(const QueryCase& c, std::ostream* os) { *os << "item" << c.item << "_seed" << c.seed; }

class RecognizesGalleryItems : public Recognition, public ::testing::WithParamInterface<QueryCase> {};

TEST_P(RecognizesGalleryItems, FindsTheItemAndItsOutline) {
    if (GetParam().known_gap && !std::getenv("SIGHTLINE_RUN_KNOWN_GAPS"))
        GTEST_SKIP() << "known recognition-quality gap of this pipeline on this photo";
    const auto items = gallery_part();
    ASSERT_LT(GetParam().item, items.size());
    const fs::path item = items[GetParam().item];
    const std::string expected_id = item.stem().string();
    synth::Photo photo = phone_photo(item, GetParam().seed);

    Result r = pipeline().recognize(request_for(photo.jpeg));
    ASSERT_FALSE(r.error.has_value()) << r.error->code << ": " << r.error->message;
    ASSERT_FALSE(r.matches.empty()) << expected_id << " was not recognised";
    const Match& m = r.matches.front();
    EXPECT_EQ(m.id, expected_id);
    EXPECT_GE(m.inliers, 10);
    EXPECT_GT(m.score, 0.0);
    EXPECT_LE(m.score, 1.0);
    EXPECT_THAT(m.metadata_json, HasSubstr("\"id\":\"" + expected_id + "\""));
    EXPECT_EQ(r.request_id, "q1");
    EXPECT_EQ(r.variant, "surf");
    for (const char* stage : {"decode", "extract", "search", "verify", "total"}) EXPECT_TRUE(r.timings_ms.count(stage)) << stage;

    // Corners in working-size pixels: the polygon is reported in query-image pixels.
    const double to_working = 800.0 / std::max(kPhotoSize.width, kPhotoSize.height);
    for (std::size_t i = 0; i < 4; ++i) {
        const double err = cv::norm(m.polygon[i] - photo.corners[i]) * to_working;
        EXPECT_LE(err, 10.0) << "corner " << i << ": found (" << m.polygon[i].x << ", " << m.polygon[i].y
                             << "), truth (" << photo.corners[i].x << ", " << photo.corners[i].y << ")";
    }
}

INSTANTIATE_TEST_SUITE_P(Photos, RecognizesGalleryItems,
                         ::testing::Values(QueryCase{0, 1}, QueryCase{5, 2}, QueryCase{9, 3}, QueryCase{14, 4},
                                           QueryCase{19, 5}),
                         [](const ::testing::TestParamInfo<QueryCase>& info) {
                             return "item" + std::to_string(info.param.item) + "_seed" + std::to_string(info.param.seed);
                         });

// The same photos through the other feature pipelines the repository ships: OpenCV's SIFT
// (config/sift.yaml) and ORB (config/orb.yaml). One Host per config and process.
struct FeatureCase {
    const char* config;  // file under config/
    QueryCase photo;
};
void PrintTo(const FeatureCase& c, std::ostream* os) {
    *os << c.config << "_item" << c.photo.item << "_seed" << c.photo.seed;
}

// `override` (key=value) is applied last; each config + override pair gets its own host.
Host& host_for(const std::string& config, const std::vector<std::string>& overrides = {}) {
    static TempDir dir("sightline-recognition-features");
    static std::map<std::string, std::unique_ptr<Host>> hosts;
    std::string key = config;
    for (const auto& o : overrides) key += "+" + o;
    auto& host = hosts[key];
    if (!host) {
        LoadedConfig c = load_config_file((source_dir() / "config" / config).string());
        apply_override(c, "plugins.paths=[" + yq(plugin_dir()) + "]");
        apply_override(c, "storages.gallery.root=" + (dir.path() / std::to_string(hosts.size())).string());
        apply_override(c, "storages.gallery.fsync=false");
        apply_override(c, "limits.workers=2");
        apply_override(c, "logging.level=warn");
        for (const auto& o : overrides) apply_override(c, o);
        host = std::make_unique<Host>(std::move(c));
        for (const auto& p : gallery_part())
            host->gallery().put(p.stem().string(), read_bytes(p),
                                read_text(fs::path(p).replace_extension(".json")));
        auto stats = host->pipeline().load(host->gallery(), &host->workers());
        EXPECT_EQ(stats.computed, kGallerySize);
    }
    return *host;
}

class OtherFeatures : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(OtherFeatures, FindsTheItemAndItsOutline) {
    if (GetParam().photo.known_gap && !std::getenv("SIGHTLINE_RUN_KNOWN_GAPS"))
        GTEST_SKIP() << "known recognition-quality gap of " << GetParam().config << " on this photo";
    Host& host = host_for(GetParam().config);
    const auto items = gallery_part();
    const QueryCase& q = GetParam().photo;
    const fs::path item = items.at(q.item);
    synth::Photo photo = phone_photo(item, q.seed);
    Result r = host.pipeline().recognize(request_for(photo.jpeg));
    ASSERT_FALSE(r.error.has_value()) << r.error->code << ": " << r.error->message;
    ASSERT_FALSE(r.matches.empty()) << item.stem() << " was not recognised";
    const Match& m = r.matches.front();
    EXPECT_EQ(m.id, item.stem().string());
    EXPECT_GE(m.inliers, 10);
    const double to_working = 800.0 / std::max(kPhotoSize.width, kPhotoSize.height);
    for (std::size_t i = 0; i < 4; ++i)
        EXPECT_LE(cv::norm(m.polygon[i] - photo.corners[i]) * to_working, 10.0) << "corner " << i;
}

// Every homography estimator verify.estimator offers finds the same photos (the default, usac, is
// covered above), with a tight outline.
class Estimators : public ::testing::TestWithParam<std::string> {};

TEST_P(Estimators, FindTheItemAndItsOutline) {
    Host& host = host_for("default.yaml", {"pipelines.surf.verify.estimator=" + GetParam()});
    EXPECT_EQ(host.pipeline().settings().verify.estimator,
              GetParam() == "ransac" ? Estimator::ransac : Estimator::magsac);
    const auto items = gallery_part();
    for (const QueryCase& q : {QueryCase{5, 2}, QueryCase{14, 4}}) {
        const fs::path item = items.at(q.item);
        synth::Photo photo = phone_photo(item, q.seed);
        Result r = host.pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->code << ": " << r.error->message;
        ASSERT_FALSE(r.matches.empty()) << item.stem() << " was not recognised";
        EXPECT_EQ(r.matches.front().id, item.stem().string());
        EXPECT_GE(r.matches.front().inliers, 10);
        const double to_working = 800.0 / std::max(kPhotoSize.width, kPhotoSize.height);
        for (std::size_t i = 0; i < 4; ++i)
            EXPECT_LE(cv::norm(r.matches.front().polygon[i] - photo.corners[i]) * to_working, 10.0) << "corner " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(Verify, Estimators, ::testing::Values("ransac", "magsac"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A photo of something not in the gallery: answered, with no match.
void expect_no_match(const Pipeline& pipeline, const synth::Photo& photo) {
    Result r = pipeline.recognize(request_for(photo.jpeg));
    ASSERT_FALSE(r.error.has_value()) << r.error->message;
    EXPECT_TRUE(r.matches.empty()) << "matched " << r.matches.front().id;
}

class OtherFeaturesNegatives : public ::testing::TestWithParam<std::string> {};

TEST_P(OtherFeaturesNegatives, ThingsNotInTheGalleryDoNotMatch) {
    Host& host = host_for(GetParam());
    const auto others = held_out_part();
    for (std::size_t i = 0; i < 3; ++i)
        expect_no_match(host.pipeline(), phone_photo(others.at(i * others.size() / 3), 100 + i));
}

INSTANTIATE_TEST_SUITE_P(
    Photos, OtherFeatures,
    ::testing::Values(FeatureCase{"sift.yaml", {0, 1}}, FeatureCase{"sift.yaml", {5, 2}}, FeatureCase{"sift.yaml", {9, 3}},
                      FeatureCase{"sift.yaml", {14, 4}}, FeatureCase{"sift.yaml", {19, 5}},
                      FeatureCase{"orb.yaml", {0, 1, true}}, FeatureCase{"orb.yaml", {5, 2}},
                      FeatureCase{"orb.yaml", {9, 3}}, FeatureCase{"orb.yaml", {14, 4}},
                      FeatureCase{"orb.yaml", {19, 5, true}}),
    [](const ::testing::TestParamInfo<FeatureCase>& info) {
        std::string name = info.param.config;
        name = name.substr(0, name.find('.'));
        return name + "_item" + std::to_string(info.param.photo.item) + "_seed" +
               std::to_string(info.param.photo.seed);
    });
INSTANTIATE_TEST_SUITE_P(Configs, OtherFeaturesNegatives,
                         ::testing::Values("surf.yaml", "sift.yaml"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             return info.param.substr(0, info.param.find('.'));
                         });

TEST_F(Recognition, ThingsNotInTheGalleryDoNotMatch) {
    const auto others = held_out_part();
    ASSERT_GE(others.size(), 3u);
    for (std::size_t i = 0; i < 3; ++i) {
        const fs::path item = others[i * others.size() / 3];
        synth::Photo photo = phone_photo(item, 100 + i);
        Result r = pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->message;
        EXPECT_TRUE(r.matches.empty()) << item.stem() << " (not in the gallery) matched " << r.matches.front().id
                                       << " with " << r.matches.front().inliers << " inliers";
    }
}

TEST_F(Recognition, PureClutterDoesNotMatch) {
    for (std::uint64_t seed : {7u, 8u}) {
        std::vector<unsigned char> jpeg;
        ASSERT_TRUE(cv::imencode(".jpg", synth::clutter_background(kPhotoSize, seed), jpeg,
                                 {cv::IMWRITE_JPEG_QUALITY, 70}));
        Result r = pipeline().recognize(request_for(jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->message;
        EXPECT_TRUE(r.matches.empty()) << "clutter matched " << r.matches.front().id;
    }
}

TEST_F(Recognition, BadInputIsAnInvalidArgumentResult) {
    const auto items = gallery_part();
    synth::Photo photo = phone_photo(items[0], 1);
    std::vector<unsigned char> truncated(photo.jpeg.begin(), photo.jpeg.begin() + photo.jpeg.size() / 2);
    std::vector<unsigned char> random(5000);
    std::mt19937 rng(5);
    for (auto& b : random) b = static_cast<unsigned char>(rng());
    random[0] = 0x00;

    struct Case {
        const char* name;
        std::vector<unsigned char> bytes;
        const char* says;
    };
    for (const Case& c : {Case{"empty", {}, "empty"}, Case{"truncated", truncated, "truncated"},
                          Case{"random", random, "not a supported image"}}) {
        SCOPED_TRACE(c.name);
        Result r = pipeline().recognize(request_for(c.bytes, std::string("bad-") + c.name));
        ASSERT_TRUE(r.error.has_value());
        EXPECT_EQ(r.error->code, "invalid_argument");
        EXPECT_THAT(r.error->message, HasSubstr(c.says));
        EXPECT_TRUE(r.matches.empty());
        EXPECT_EQ(r.request_id, std::string("bad-") + c.name);
        EXPECT_THROW(pipeline().recognize_or_throw(request_for(c.bytes)), Error);
    }
}

TEST_F(Recognition, ClientFieldsAndDeadline) {
    const auto items = gallery_part();
    synth::Photo photo = easy_photo(items[8], 9);
    Request bad = request_for(photo.jpeg);
    bad.client_fields = {{"pos_x", "left"}, {"pos_y", "10"}};
    Result r = pipeline().recognize(bad);
    ASSERT_TRUE(r.error.has_value());
    EXPECT_EQ(r.error->code, "invalid_argument");
    EXPECT_THAT(r.error->message, HasSubstr("pos_x"));

    Request late = request_for(photo.jpeg);
    late.deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    r = pipeline().recognize(late);
    ASSERT_TRUE(r.error.has_value());
    EXPECT_EQ(r.error->code, "deadline_exceeded");

    // A point inside the item keeps it first.
    Request pointed = request_for(photo.jpeg);
    const cv::Point2f centre = (photo.corners[0] + photo.corners[2]) * 0.5f;
    pointed.client_fields = {{"pos_x", std::to_string(centre.x)}, {"pos_y", std::to_string(centre.y)}};
    r = pipeline().recognize(pointed);
    ASSERT_FALSE(r.error.has_value()) << r.error->message;
    ASSERT_FALSE(r.matches.empty());
    EXPECT_EQ(r.matches.front().id, items[8].stem().string());
}

// --- the CLI ------------------------------------------------------------------------------------


TEST(Cli, IngestThenQueryPrintsTheRightId) {
    TempDir dir("sightline-cli");
    const fs::path images = dir / "images";
    fs::create_directories(images);
    const auto all = gallery_part();
    for (std::size_t i = 0; i < 10; ++i) {
        fs::copy_file(all[i], images / all[i].filename());
        fs::copy_file(fs::path(all[i]).replace_extension(".json"), images / all[i].stem().concat(".json"));
    }
    const fs::path cfg = dir / "cli.yaml";
    write_text(cfg, "plugins: { paths: [" + yq(plugin_dir()) + "] }\n"
                    "storages:\n  gallery: { type: local, root: " + yq(dir / "store") + " }\n"
                    "gallery: { storage: gallery }\n"
                    "pipelines:\n"
                    "  orb:\n"
                    "    features: { type: orb, max_features: 1000, fast_threshold: 12 }\n"
                    "    index: { type: bruteforce, ratio: 0.8 }\n"
                    "limits: { workers: 2 }\n"
                    "logging: { level: warn }\n");
    const std::string cli = sh_quote(SIGHTLINE_CLI) + " --config " + sh_quote(cfg.string());
    const std::string log = " 2>>" + sh_quote((dir / "stderr.log").string());

    ShellRun ingest = run_shell(cli + " ingest " + sh_quote(images.string()) + log);
    ASSERT_EQ(ingest.status, 0) << ingest.out << read_text(dir / "stderr.log");
    EXPECT_THAT(ingest.out, HasSubstr("ingested 10 of 10")) << ingest.out;
    EXPECT_TRUE(fs::exists(dir / "store" / "images" / (all[8].stem().string() + ".item")));

    const std::string expected = all[8].stem().string();
    synth::Photo photo = easy_photo(all[8], 42);
    const fs::path query = dir / "query.jpg";
    write_bytes(query, Bytes(photo.jpeg.begin(), photo.jpeg.end()));

    ShellRun q = run_shell(cli + " --set limits.queue=4 query " + sh_quote(query.string()) + log);
    ASSERT_EQ(q.status, 0) << q.out << read_text(dir / "stderr.log");
    auto line = nlohmann::json::parse(q.out.substr(0, q.out.find('\n')), nullptr, false);
    ASSERT_FALSE(line.is_discarded()) << "not JSON: " << q.out;
    EXPECT_EQ(line.value("image", ""), query.string());
    ASSERT_TRUE(line.contains("matches")) << q.out;
    ASSERT_FALSE(line["matches"].empty()) << q.out;
    EXPECT_EQ(line["matches"][0]["id"], expected) << q.out;
    EXPECT_EQ(line["matches"][0]["polygon"].size(), 4u);
    EXPECT_EQ(line["matches"][0]["metadata"]["id"], expected) << q.out;
    EXPECT_FALSE(line.contains("error")) << q.out;

    // A file that is not an image gives an error line and a non-zero status.
    write_text(dir / "bad.jpg", "nope");
    ShellRun bad = run_shell(cli + " query " + sh_quote((dir / "bad.jpg").string()) + log);
    EXPECT_NE(bad.status, 0);
    auto bad_line = nlohmann::json::parse(bad.out.substr(0, bad.out.find('\n')), nullptr, false);
    ASSERT_FALSE(bad_line.is_discarded()) << bad.out;
    EXPECT_EQ(bad_line["error"]["code"], "invalid_argument") << bad.out;
}

// With no --config and no config/ in the working directory the built-in default runs: its
// plugins beside the executable, its vocabulary in share/sightline beside bin/ (SIGHTLINE_SHARE's
// default). A SIGHTLINE_SHARE without the vocabulary is refused, naming it.
TEST(Cli, TheBuiltInDefaultRunsFromAnyDirectory) {
    TempDir dir("sightline-cli-default");
    const fs::path images = dir / "images";
    fs::create_directories(images);
    const auto all = gallery_part();
    for (std::size_t i = 0; i < 8; ++i) fs::copy_file(all[i], images / all[i].filename());
    const fs::path query = dir / "query.jpg";
    const synth::Photo photo = phone_photo(all[5], 77);
    write_bytes(query, Bytes(photo.jpeg.begin(), photo.jpeg.end()));
    const std::string in_dir = "cd " + sh_quote(dir.path().string()) + " && env -u SIGHTLINE_SHARE SIGHTLINE_DATA=" +
                               sh_quote((dir / "data").string()) + " " + sh_quote(SIGHTLINE_CLI);
    const std::string log = " 2>" + sh_quote((dir / "stderr.log").string());

    ShellRun ingest = run_shell(in_dir + " ingest images" + log);
    ASSERT_EQ(ingest.status, 0) << ingest.out << read_text(dir / "stderr.log");
    EXPECT_THAT(ingest.out, HasSubstr("ingested 8 of 8")) << ingest.out;
    EXPECT_THAT(read_text(dir / "stderr.log"), HasSubstr("vocabulary 'surf-default.voc'"));
    EXPECT_TRUE(fs::exists(dir / "data" / "gallery" / "images" / (all[5].stem().string() + ".item")));

    ShellRun q = run_shell(in_dir + " query query.jpg" + log);
    ASSERT_EQ(q.status, 0) << q.out << read_text(dir / "stderr.log");
    auto line = nlohmann::json::parse(q.out.substr(0, q.out.find('\n')), nullptr, false);
    ASSERT_FALSE(line.is_discarded()) << "not JSON: " << q.out;
    ASSERT_TRUE(line.contains("matches")) << q.out;
    ASSERT_FALSE(line["matches"].empty()) << q.out;
    EXPECT_EQ(line["matches"][0]["id"], all[5].stem().string()) << q.out;

    const std::string elsewhere = "cd " + sh_quote(dir.path().string()) + " && SIGHTLINE_SHARE=" +
                                  sh_quote((dir / "empty").string()) + " SIGHTLINE_DATA=" +
                                  sh_quote((dir / "data").string()) + " " + sh_quote(SIGHTLINE_CLI);
    ShellRun refused = run_shell(elsewhere + " query query.jpg" + log);
    EXPECT_NE(refused.status, 0);
    EXPECT_THAT(read_text(dir / "stderr.log"), HasSubstr("vocabulary 'surf-default.voc' is not in storage 'vocab'"));
}

}  // namespace

// Between phone_photo (the vocabulary index's first look finds 19 of 20) and hard_photo (neither
// look finds any): small, turned, tilted, blurred and dull.
synth::Photo middling_photo(const fs::path& item, std::uint64_t seed) {
    return render_photo(item, seed, {.scale = 0.4, .rotation_deg = 20, .tilt_x = 0.2},
                        {.blur_sigma = 1.5, .noise_sigma = 5, .jpeg_quality = 60, .contrast = 0.7});
}

// features-surf computes its first octave's box filters eight columns at a time where the CPU has
// AVX2 (the package's baseline stops at 128-bit SIMD), and must give the same features to the bit
// either way: gallery records made on one machine are searched with queries made on another.
// OPENCV_CPU_DISABLE=AVX2 turns that path off (as it does OpenCV's own).
TEST(Cli, SurfFeaturesAreTheSameWithAndWithoutAvx2) {
    if (!cv::checkHardwareSupport(CV_CPU_AVX2))
        GTEST_SKIP() << "this CPU has no AVX2: one path only";
    TempDir dir("sightline-cli-avx2");
    const fs::path images = dir / "images";
    fs::create_directories(images);
    const auto all = gallery_part();
    for (std::size_t i = 0; i < 3; ++i) fs::copy_file(all[i], images / all[i].filename());
    const auto features_of = [&](const std::string& name, const std::string& env) {
        const fs::path cfg = dir / (name + ".yaml");
        write_text(cfg,
                   "plugins: { paths: [" + yq(plugin_dir()) +
                       "] }\n"
                       "storages:\n  gallery: { type: local, root: " +
                       yq(dir / name) +
                       " }\n"
                       "gallery: { storage: gallery }\n"
                       "pipelines:\n"
                       "  surf:\n"
                       "    features: { type: surf, hessian_threshold: 5, max_features: 3000 }\n"
                       "    index: { type: bruteforce }\n"
                       "logging: { level: warn }\n");
        const ShellRun r =
            run_shell(env + " " + sh_quote(SIGHTLINE_CLI) + " --config " + sh_quote(cfg.string()) +
                " ingest " + sh_quote(images.string()) + " 2>&1");
        EXPECT_EQ(r.status, 0) << r.out;
        std::map<std::string, std::string> records;
        if (fs::exists(dir / name / "features"))
            for (const auto& e : fs::recursive_directory_iterator(dir / name / "features"))
                if (e.path().extension() == ".rec")
                    records[e.path().filename().string()] = read_text(e.path());
        return records;
    };
    const auto wide = features_of("avx2", "");
    const auto narrow = features_of("sse", "OPENCV_CPU_DISABLE=AVX2");
    ASSERT_EQ(wide.size(), 3u);
    ASSERT_EQ(narrow.size(), 3u);
    for (const auto& [name, bytes] : wide) {
        ASSERT_TRUE(narrow.count(name)) << name;
        EXPECT_GT(bytes.size(), 100u * 64u * sizeof(float)) << name;  // a hundred features at least
        EXPECT_TRUE(bytes == narrow.at(name)) << name << " differs with and without AVX2";
    }
}

TEST(Rectify, FindsHardPhotosTheFirstLookMisses) {
    Host& on = host_for("surf.yaml");
    Host& off = host_for("surf.yaml", {"pipelines.surf.verify.rectify_min_inliers=0"});
    EXPECT_EQ(on.pipeline().settings().verify.rectify_min_inliers, 5);
    const auto items = gallery_part();
    for (const QueryCase& q : {QueryCase{9, 11}, QueryCase{10, 12}}) {
        const fs::path item = items.at(q.item);
        synth::Photo photo = hard_photo(item, q.seed);
        Result without = off.pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(without.error.has_value()) << without.error->message;
        EXPECT_TRUE(without.matches.empty()) << "the first look alone now finds " << item.stem()
                                             << "; pick a harder photo for this test";
        Result r = on.pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->message;
        ASSERT_FALSE(r.matches.empty()) << item.stem() << " was not recognised";
        EXPECT_EQ(r.matches.front().id, item.stem().string());
        EXPECT_GE(r.matches.front().inliers, 10);
        const double to_working = 800.0 / std::max(kPhotoSize.width, kPhotoSize.height);
        for (std::size_t i = 0; i < 4; ++i)
            EXPECT_LE(cv::norm(r.matches.front().polygon[i] - photo.corners[i]) * to_working, 10.0)
                << "corner " << i;
    }
}

// The surf pipeline's counter sightline_<name>, -1 if it is not there.
double surf_counter(Host& h, const std::string& name) {
    std::istringstream in(h.metrics().render());
    const std::string series = "sightline_" + name + R"({pipeline="surf"} )";
    for (std::string line; std::getline(in, line);)
        if (line.rfind(series, 0) == 0) return std::stod(line.substr(series.size()));
    return -1.0;
}

double rectifications(Host& h) { return surf_counter(h, "verify_rectifications_total"); }

// Through the vocabulary index, every item twice: as itself and as "copy-" + its name. The two rank
// first and second alike, so where the first look fails, both need a second look.
Host& vocab_host_with_copies(const std::vector<std::string>& overrides) {
    Host& h = host_for("default.yaml", overrides);
    const auto items = gallery_part();
    if (h.pipeline().size() == items.size()) {
        for (const auto& p : items)
            h.gallery().put("copy-" + p.stem().string(), read_bytes(p),
                            read_text(fs::path(p).replace_extension(".json")));
        h.pipeline().load(h.gallery(), &h.workers());
    }
    EXPECT_EQ(h.pipeline().size(), 2 * items.size());
    return h;
}

// Each gallery item's middling photo recognised by host a and by host b, in item order.
void middling_results(Host& a, Host& b, std::vector<std::array<Result, 2>>& out) {
    const auto items = gallery_part();
    for (std::size_t i = 0; i < items.size(); ++i) {
        const synth::Photo photo = middling_photo(items[i], 300 + i);
        out.push_back({a.pipeline().recognize(request_for(photo.jpeg)),
                       b.pipeline().recognize(request_for(photo.jpeg))});
        for (const Result& r : out.back()) ASSERT_FALSE(r.error.has_value()) << r.error->message;
    }
}

// rectify_candidates: only the first N candidates get the second look, each a feature extraction
// (counted in verify_rectifications_total). The hard photos' items rank among the first two, so two
// are enough for them; photos of other things through the vocabulary index, whose chance
// candidates often have 5-9 inliers, get a second look for at most one candidate each.
TEST(Rectify, OnlyTheFirstCandidatesGetTheSecondLook) {
    Host& two = host_for("surf.yaml", {"pipelines.surf.verify.rectify_candidates=2"});
    EXPECT_EQ(two.pipeline().settings().verify.rectify_candidates, 2u);
    const auto items = gallery_part();
    for (const QueryCase& q : {QueryCase{9, 11}, QueryCase{10, 12}}) {
        Result r = two.pipeline().recognize(request_for(hard_photo(items.at(q.item), q.seed).jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->message;
        ASSERT_FALSE(r.matches.empty()) << items.at(q.item).stem() << " was not recognised";
        EXPECT_EQ(r.matches.front().id, items.at(q.item).stem().string());
    }
    EXPECT_GT(rectifications(two), 0.0);

    // Where the first look fails, with every candidate looked at again item and copy are both
    // found; with rectify_candidates 1 only the first.
    Host& all = vocab_host_with_copies({"pipelines.surf.verify.rectify_after_match=true"});
    Host& one = vocab_host_with_copies({"pipelines.surf.verify.rectify_after_match=true",
                                        "pipelines.surf.verify.rectify_candidates=1"});
    const double all_before = rectifications(all), one_before = rectifications(one);
    std::vector<std::array<Result, 2>> results;
    ASSERT_NO_FATAL_FAILURE(middling_results(all, one, results));
    int both = 0;
    for (const auto& [by_all, by_one] : results) {
        EXPECT_LE(by_one.matches.size(), by_all.matches.size());
        if (by_all.matches.size() == 2 && by_one.matches.size() == 1) ++both;
    }
    EXPECT_GE(both, 3) << "photos whose item and copy were both found only when every candidate got a second look";
    EXPECT_GT(rectifications(all) - all_before, rectifications(one) - one_before);
}

// By default second looks stop at the first match: they are for photos whose object no first look
// found, and each costs an extraction. Where item and copy both need one, one is found, for fewer
// extractions; rectify_after_match: true goes on and finds both.
TEST(Rectify, SecondLooksStopAtTheFirstMatchUnlessAskedToGoOn) {
    Host& until = vocab_host_with_copies({});
    Host& every = vocab_host_with_copies({"pipelines.surf.verify.rectify_after_match=true"});
    EXPECT_FALSE(until.pipeline().settings().verify.rectify_after_match);
    ASSERT_TRUE(every.pipeline().settings().verify.rectify_after_match);
    const auto items = gallery_part();
    const double until_before = rectifications(until), every_before = rectifications(every);
    std::vector<std::array<Result, 2>> results;
    ASSERT_NO_FATAL_FAILURE(middling_results(until, every, results));
    int one_instead_of_two = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
        const auto& [by_until, by_every] = results[i];
        const std::string name = items[i].stem().string();
        for (const Match& m : by_until.matches)
            EXPECT_THAT(m.id, AnyOf(name, "copy-" + name)) << "a wrong item";
        // Found or not alike: the same candidates get the same first and second looks up to the
        // first match.
        EXPECT_EQ(by_until.matches.empty(), by_every.matches.empty()) << name;
        EXPECT_LE(by_until.matches.size(), by_every.matches.size());
        if (by_every.matches.size() == 2 && by_until.matches.size() == 1) ++one_instead_of_two;
    }
    EXPECT_GE(one_instead_of_two, 3)
        << "photos whose copy was found only by going on after the first match";
    EXPECT_LT(rectifications(until) - until_before, rectifications(every) - every_before);
}

TEST(Rectify, HardPhotosOfOtherThingsDoNotMatch) {
    Host& on = host_for("default.yaml");
    const auto others = held_out_part();
    for (std::size_t i = 0; i < 4; ++i)
        expect_no_match(on.pipeline(), hard_photo(others.at(i * others.size() / 4), 200 + i));
}

// With rematch off no descriptors are kept in memory; the second look then matches the rectified
// photo through the index's word matches (Index::match_item) and still only where they land.
TEST(Rectify, LooksAgainThroughTheIndexWhenNoDescriptorsAreKept) {
    // Not confirming: its second looks would match the stored descriptors instead (verify.confirm).
    const std::string index_only = "pipelines.surf.verify.confirm=false";
    Host& on = host_for("default.yaml", {index_only, "pipelines.surf.verify.rectify_min_inliers=5"});
    Host& off = host_for("default.yaml", {index_only, "pipelines.surf.verify.rectify_min_inliers=0"});
    ASSERT_FALSE(on.pipeline().settings().verify.rematch);
    const auto items = gallery_part();
    // Measured 6 of 20 with the first look alone, 12 with the second.
    std::vector<std::array<Result, 2>> results;
    ASSERT_NO_FATAL_FAILURE(middling_results(off, on, results));
    int first_look = 0, second_look = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
        const auto& [without, with] = results[i];
        for (const Result* r : {&without, &with}) {
            if (!r->matches.empty()) {
                EXPECT_EQ(r->matches.front().id, items[i].stem().string()) << "a wrong item";
            }
        }
        first_look += !without.matches.empty();
        second_look += !with.matches.empty();
        if (!without.matches.empty()) {
            EXPECT_FALSE(with.matches.empty()) << items[i].stem() << " lost by looking again";
        }
    }
    EXPECT_GE(second_look, first_look + 4) << "first look " << first_look << ", with the second "
                                           << second_look << " of " << items.size();
}

// A close-up of the middle of an item (half its width and height, a quarter of its area) is
// recognised, its inliers all inside that part; verify.min_inlier_area above a quarter refuses it,
// as it refuses chance fits on one small patch of repeated structure.
TEST(Verify, MinInlierAreaRefusesFitsOnASmallPartOfTheReference) {
    Host& plain = host_for("surf.yaml");
    Host& strict = host_for("surf.yaml", {"pipelines.surf.verify.min_inlier_area=0.3"});
    EXPECT_EQ(plain.pipeline().settings().verify.min_inlier_area, 0.0);
    EXPECT_EQ(strict.pipeline().settings().verify.min_inlier_area, 0.3);
    const auto items = gallery_part();
    int found = 0;
    for (std::size_t i : {0u, 2u, 4u, 6u}) {  // of the 20, 10 close-ups are recognised, these among them
        const cv::Mat image = cv::imread(items.at(i).string(), cv::IMREAD_COLOR);
        ASSERT_FALSE(image.empty()) << items.at(i);
        const cv::Rect patch(image.cols / 4, image.rows / 4, image.cols / 2, image.rows / 2);
        cv::Mat close_up;
        cv::resize(image(patch), close_up, kPhotoSize, 0, 0, cv::INTER_CUBIC);
        std::vector<unsigned char> jpeg;
        ASSERT_TRUE(cv::imencode(".jpg", close_up, jpeg, {cv::IMWRITE_JPEG_QUALITY, 92}));
        Result loose = plain.pipeline().recognize(request_for(jpeg));
        ASSERT_FALSE(loose.error.has_value()) << loose.error->message;
        if (!loose.matches.empty()) {
            EXPECT_EQ(loose.matches.front().id, items[i].stem().string());
            ++found;
        }
        Result r = strict.pipeline().recognize(request_for(jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->message;
        EXPECT_TRUE(r.matches.empty()) << items[i].stem() << " matched with " << r.matches.front().inliers
                                       << " inliers inside a quarter of it";
    }
    EXPECT_GE(found, 3) << "the close-ups are no longer recognised at all; the test shows nothing";
}

// verify.confirm: with rematch off, a fit on the index's word matches counts only if the
// reference's own descriptors, read from its feature record in the gallery storage, confirm it.
// Word matches agree by chance on smooth repeated texture (planet renders: docs/indexes.md);
// nearest descriptors with a ratio test do not. Shown here by the record itself: once its
// descriptors are moved one keypoint along, the word matches still fit but are confirmed nowhere,
// in the first look or the second.
TEST(Verify, ConfirmChecksWordMatchesAgainstTheStoredDescriptors) {
    Host& plain = host_for("default.yaml", {"pipelines.surf.verify.confirm=false"});
    Host& confirming = host_for("default.yaml", {"pipelines.surf.verify.confirm=true"});
    ASSERT_FALSE(plain.pipeline().settings().verify.confirm);
    ASSERT_TRUE(confirming.pipeline().settings().verify.confirm);
    const auto items = gallery_part();
    const auto photo_of = [&](std::size_t i) { return phone_photo(items[i], 700 + i); };
    std::vector<std::size_t> found;
    int lost = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
        const synth::Photo photo = photo_of(i);
        const Result a = plain.pipeline().recognize(request_for(photo.jpeg));
        const Result b = confirming.pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(a.error.has_value()) << a.error->message;
        ASSERT_FALSE(b.error.has_value()) << b.error->message;
        for (const Result* r : {&a, &b})
            if (!r->matches.empty()) {
                EXPECT_EQ(r->matches.front().id, items[i].stem().string()) << "a wrong item";
            }
        if (a.matches.empty()) continue;
        // A true view's word matches are matches of its descriptors too (or its second look finds
        // them).
        if (b.matches.empty()) {
            ADD_FAILURE() << items[i].stem() << " lost by confirming";
            ++lost;
            continue;
        }
        found.push_back(i);
    }
    ASSERT_GE(found.size(), 8u) << "too few photos recognised for the test to show anything";

    const std::string signature = confirming.pipeline().signature();
    for (std::size_t n = 0; n < 3; ++n) {
        const std::size_t i = found[n];
        const std::string id = items[i].stem().string();
        auto bytes = confirming.gallery().record(signature, id);
        ASSERT_TRUE(bytes.has_value()) << id;
        FeatureRecord record = decode_record(*bytes, id);
        const cv::Mat d = record.features.descriptors.clone();
        for (int r = 0; r < d.rows; ++r)
            d.row((r + 1) % d.rows).copyTo(record.features.descriptors.row(r));
        confirming.gallery().put_record(signature, id, encode_record(record));
        const synth::Photo photo = photo_of(i);
        const Result r = confirming.pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(r.error.has_value()) << r.error->message;
        EXPECT_TRUE(r.matches.empty())
            << id << " matched though its stored descriptors confirm none of its word matches";
        // Without its record it cannot be confirmed; it is then judged on its word matches, as
        // without confirm (and a warning says so).
        confirming.gallery().remove_record(signature, id);
        const double unconfirmed = surf_counter(confirming, "verify_unconfirmed_total");
        ASSERT_GE(unconfirmed, 0.0);
        const Result unread = confirming.pipeline().recognize(request_for(photo.jpeg));
        ASSERT_FALSE(unread.error.has_value()) << unread.error->message;
        ASSERT_FALSE(unread.matches.empty()) << id;
        EXPECT_EQ(unread.matches.front().id, id);
        EXPECT_GT(surf_counter(confirming, "verify_unconfirmed_total"), unconfirmed);
    }
}
