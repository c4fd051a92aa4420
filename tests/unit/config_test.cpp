// Config loading and validation: every message must point at file:line and the key path, and say
// what was expected and what was found.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sightline/config.hpp>

#include <cstdlib>
#include <regex>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/host.hpp"
#include "sightline/host/plugin_registry.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& e : v) s += e + "\n";
    return s;
}

class ConfigTest : public ::testing::Test {
protected:
    void SetUp() override {
        registry_ = std::make_unique<PluginRegistry>(std::vector<fs::path>{plugin_dir()});
        registry_->load_all();
        ASSERT_NE(registry_->find(PluginKind::features, "orb"), nullptr) << "features-orb not built in " << plugin_dir();
    }

    // A complete, valid config; `features` are the lines of pipelines.orb.features (indented by 6),
    // which start at line 9. `extra` is appended at the end.
    std::string config_text(const std::vector<std::string>& features, const std::string& extra = {}) const {
        std::string t;
        t += "plugins:\n";                                                               // 1
        t += "  paths: [" + yq(plugin_dir()) + "]\n";                                    // 2
        t += "storages:\n";                                                              // 3
        t += "  gallery: { type: local, root: " + yq(dir_ / "store") + " }\n";            // 4
        t += "gallery: { storage: gallery }\n";                                          // 5
        t += "pipelines:\n";                                                             // 6
        t += "  orb:\n";                                                                 // 7
        t += "    features:\n";                                                          // 8
        for (const auto& l : features) t += "      " + l + "\n";                         // 9...
        t += "    index: { type: bruteforce }\n";
        t += extra;
        return t;
    }

    std::vector<std::string> check(const std::string& text) const {
        return check_config(load_config_text(text, "cfg.yaml"), *registry_);
    }

    TempDir dir_{"sightline-config"};
    std::unique_ptr<PluginRegistry> registry_;
};

TEST_F(ConfigTest, ValidConfigHasNoErrors) {
    auto errors = check(config_text({"type: orb", "max_features: 500"}));
    EXPECT_TRUE(errors.empty()) << join(errors);
}

TEST_F(ConfigTest, UnknownKeyNamesFileLineKeyPathAndSuggestion) {
    auto errors = check(config_text({"type: orb", "max_feature: 500"}));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    const std::string& e = errors[0];
    EXPECT_THAT(e, HasSubstr("cfg.yaml:10")) << e;
    EXPECT_THAT(e, HasSubstr("pipelines.orb.features")) << e;
    EXPECT_THAT(e, HasSubstr("unknown key 'max_feature'")) << e;
    EXPECT_THAT(e, HasSubstr("did you mean 'max_features'")) << e;
    // ... and the allowed keys, from the plugin's schema.
    EXPECT_THAT(e, HasSubstr("fast_threshold")) << e;
}

TEST_F(ConfigTest, UnknownTopLevelKeySuggestsTheRightSection) {
    auto errors = check(config_text({"type: orb"}, "limit: { queue: 3 }\n"));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    EXPECT_THAT(errors[0], HasSubstr("cfg.yaml:11")) << errors[0];
    EXPECT_THAT(errors[0], HasSubstr("unknown key 'limit'")) << errors[0];
    EXPECT_THAT(errors[0], HasSubstr("did you mean 'limits'")) << errors[0];
}

TEST_F(ConfigTest, WrongTypeSaysExpectedAndFoundWithLine) {
    auto errors = check(config_text({"type: orb", "max_features: lots"}));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    const std::string& e = errors[0];
    EXPECT_THAT(e, HasSubstr("cfg.yaml:10")) << e;
    EXPECT_THAT(e, HasSubstr("pipelines.orb.features.max_features")) << e;
    EXPECT_THAT(e, HasSubstr("expected an integer, found 'lots'")) << e;
}

TEST_F(ConfigTest, WrongTypeInHostSections) {
    auto errors = check(config_text({"type: orb"},
                                    "limits:\n"                      // 11
                                    "  max_body_bytes: lots\n"       // 12
                                    "  request_timeout: 5 parsecs\n" // 13
                                    "  queue: 1.5\n"));              // 14
    std::string all = join(errors);
    ASSERT_EQ(errors.size(), 3u) << all;
    EXPECT_THAT(all, HasSubstr("cfg.yaml:12: limits.max_body_bytes: expected a size such as 512KB or 20MB, found 'lots'"));
    EXPECT_THAT(all, HasSubstr("cfg.yaml:13: limits.request_timeout: expected a duration such as 250ms or 5s, found '5 parsecs'"));
    EXPECT_THAT(all, HasSubstr("cfg.yaml:14: limits.queue: expected an integer, found '1.5'"));
}

TEST_F(ConfigTest, OutOfRangeValueNamesTheBounds) {
    auto errors = check(config_text({"type: orb", "max_features: 0", "scale_factor: 7"}));
    std::string all = join(errors);
    ASSERT_EQ(errors.size(), 2u) << all;
    EXPECT_THAT(all, HasSubstr("cfg.yaml:10: pipelines.orb.features.max_features: expected a value between 1 and 100000, found 0"));
    EXPECT_THAT(all, HasSubstr("cfg.yaml:11: pipelines.orb.features.scale_factor: expected a value between 1.01 and 2, found 7"));
}

TEST_F(ConfigTest, BadChoiceSuggestsTheClosest) {
    auto errors = check(config_text({"type: orb", "score_type: harriss"}));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    EXPECT_THAT(errors[0], HasSubstr("cfg.yaml:10: pipelines.orb.features.score_type: expected one of harris, fast, found 'harriss'"));
    EXPECT_THAT(errors[0], HasSubstr("did you mean 'harris'"));
}

TEST_F(ConfigTest, RequiredKeyMissing) {
    std::string text = config_text({"type: orb"});
    auto pos = text.find(", root: ");
    ASSERT_NE(pos, std::string::npos);
    text.replace(pos, text.find(" }", pos) - pos, "");  // storages.gallery: { type: local }
    auto errors = check(text);
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    EXPECT_THAT(errors[0], HasSubstr("cfg.yaml:4: storages.gallery.root: required key is missing"));
}

TEST_F(ConfigTest, MissingPluginNamesItSuggestsAndListsSearchPath) {
    auto errors = check(config_text({"type: orbb"}));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    const std::string& e = errors[0];
    EXPECT_THAT(e, HasSubstr("cfg.yaml:9")) << e;
    EXPECT_THAT(e, HasSubstr("pipelines.orb.features.type")) << e;
    EXPECT_THAT(e, HasSubstr("'orbb'")) << e;
    EXPECT_THAT(e, HasSubstr("did you mean 'orb'")) << e;
    EXPECT_THAT(e, HasSubstr("libsightline_features_orbb.so")) << e;
    EXPECT_THAT(e, HasSubstr(plugin_dir().string())) << e;
}

TEST_F(ConfigTest, HostRefusesAnInvalidConfigWithTheSameMessage) {
    auto text = config_text({"type: orbb"}, "limits: { workers: 1 }\n");
    Error e = capture_error([&] { Host host(load_config_text(text, "cfg.yaml")); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("cfg.yaml:9")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("did you mean 'orb'")) << e.what();
    // Nothing was constructed: the storage root was not created.
    EXPECT_FALSE(fs::exists(dir_ / "store"));
}

TEST_F(ConfigTest, RectifyBelowMinInliers) {
    auto errors = check(
        config_text({"type: orb"},
                    "    verify: { min_inliers: 10,\n              rectify_min_inliers: 10 }\n"));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    EXPECT_THAT(errors[0], HasSubstr("cfg.yaml:12"));
    EXPECT_THAT(
        errors[0],
        HasSubstr("pipelines.orb.verify.rectify_min_inliers: 10 must be below min_inliers (10)"));
    EXPECT_TRUE(check(config_text({"type: orb"},
                                  "    verify: { min_inliers: 10, rectify_min_inliers: 5 }\n"))
                    .empty());
    // min_inliers' default (15) counts when the key is absent.
    EXPECT_TRUE(
        check(config_text({"type: orb"}, "    verify: { rectify_min_inliers: 14 }\n")).empty());
    EXPECT_EQ(check(config_text({"type: orb"}, "    verify: { rectify_min_inliers: 15 }\n")).size(),
              1u);
}

TEST_F(ConfigTest, SeveralProblemsAreAllReported) {
    auto text = config_text({"type: orb", "max_feature: 1", "levels: many"}, "limits: { queue: 0 }\n");
    Error e = capture_error([&] { Host host(load_config_text(text, "cfg.yaml")); });
    EXPECT_THAT(e.what(), HasSubstr("3 problems")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("max_feature")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("levels")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("limits.queue")) << e.what();
}

// --- ${VAR} expansion ------------------------------------------------------------------------

TEST(ConfigEnv, UnsetVariableNamesItAndTheLine) {
    ::unsetenv("SIGHTLINE_TEST_SURELY_UNSET");
    std::string text =
        "logging: { level: info }\n"
        "storages:\n"
        "  gallery:\n"
        "    type: local\n"
        "    root: \"${SIGHTLINE_TEST_SURELY_UNSET}/gallery\"\n";
    Error e = capture_error([&] { load_config_text(text, "env.yaml"); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("env.yaml:5")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("SIGHTLINE_TEST_SURELY_UNSET")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("storages.gallery.root")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("not set")) << e.what();
}

TEST(ConfigEnv, DefaultAndSetVariablesExpand) {
    ::unsetenv("SIGHTLINE_TEST_SURELY_UNSET");
    ::setenv("SIGHTLINE_TEST_SET_VAR", "from-env", 1);
    auto c = load_config_text(
        "a: \"${SIGHTLINE_TEST_SURELY_UNSET:-/fallback}/x\"\n"
        "b: \"pre-${SIGHTLINE_TEST_SET_VAR}-post\"\n"
        "c: \"${SIGHTLINE_TEST_SET_VAR:-unused}\"\n"
        "d: [\"${SIGHTLINE_TEST_SURELY_UNSET:-}\", plain]\n"
        "e: { f: \"${SIGHTLINE_TEST_SET_VAR}${SIGHTLINE_TEST_SET_VAR}\" }\n",
        "env.yaml");
    EXPECT_EQ(c.root["a"].as<std::string>(), "/fallback/x");
    EXPECT_EQ(c.root["b"].as<std::string>(), "pre-from-env-post");
    EXPECT_EQ(c.root["c"].as<std::string>(), "from-env");
    EXPECT_EQ(c.root["d"][0].as<std::string>(), "");
    EXPECT_EQ(c.root["d"][1].as<std::string>(), "plain");
    EXPECT_EQ(c.root["e"]["f"].as<std::string>(), "from-envfrom-env");
    ::unsetenv("SIGHTLINE_TEST_SET_VAR");
}

// The shipped configs name their data files (vocabularies) under ${SIGHTLINE_SHARE}: unset, it is
// the share/sightline directory beside the running executable's bin/, where the build puts them.
TEST(ConfigEnv, SightlineShareDefaultsToTheDirectoryBesideTheExecutable) {
    ::unsetenv("SIGHTLINE_SHARE");
    auto c = load_config_text("a: \"${SIGHTLINE_SHARE}/vocabularies\"\n", "share.yaml");
    const fs::path exe_dir = fs::canonical("/proc/self/exe").parent_path();
    EXPECT_EQ(share_dir(), (exe_dir.parent_path() / "share" / "sightline").string());
    EXPECT_EQ(c.root["a"].as<std::string>(), share_dir() + "/vocabularies");
    EXPECT_TRUE(fs::exists(share_dir() + "/vocabularies/surf-default.voc"))
        << "the build copies config/vocabularies into " << share_dir();
    ::setenv("SIGHTLINE_SHARE", "/opt/elsewhere", 1);
    c = load_config_text("a: \"${SIGHTLINE_SHARE}/vocabularies\"\n", "share.yaml");
    EXPECT_EQ(c.root["a"].as<std::string>(), "/opt/elsewhere/vocabularies");
    ::unsetenv("SIGHTLINE_SHARE");
}

TEST(ConfigEnv, MalformedReferencesAreErrorsWithLine) {
    struct Case {
        std::string value, expect;
    };
    for (const Case& c : {Case{"${UNCLOSED", "unterminated '${'"}, Case{"x${}y", "not a valid environment variable"},
                          Case{"${1ABC}", "not a valid environment variable"},
                          Case{"${A-B}", "not a valid environment variable"}}) {
        std::string text = "first: 1\nsecond: \"" + c.value + "\"\n";
        Error e = capture_error([&] { load_config_text(text, "bad.yaml"); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << c.value;
        EXPECT_THAT(e.what(), HasSubstr("bad.yaml:2")) << c.value << " → " << e.what();
        EXPECT_THAT(e.what(), HasSubstr(c.expect)) << c.value << " → " << e.what();
    }
}

// --- --set overrides ----------------------------------------------------------------------------

TEST(ConfigOverride, ChangesANestedValueAndKeepsTheRest) {
    auto c = load_config_text(
        "pipelines:\n"
        "  orb:\n"
        "    features: { type: orb, max_features: 1000 }\n"
        "    index: { type: bruteforce }\n"
        "storages: { gallery: { type: local, root: /somewhere } }\n",
        "o.yaml");
    apply_override(c, "pipelines.orb.features.max_features=2000");
    EXPECT_EQ(c.root["pipelines"]["orb"]["features"]["max_features"].as<int>(), 2000);
    EXPECT_EQ(c.root["pipelines"]["orb"]["features"]["type"].as<std::string>(), "orb");
    EXPECT_EQ(c.root["pipelines"]["orb"]["index"]["type"].as<std::string>(), "bruteforce");
    EXPECT_EQ(c.root["storages"]["gallery"]["root"].as<std::string>(), "/somewhere");
    // A second override of a sibling does not disturb the first (yaml-cpp aliasing).
    apply_override(c, "pipelines.orb.features.levels=4");
    EXPECT_EQ(c.root["pipelines"]["orb"]["features"]["max_features"].as<int>(), 2000);
    EXPECT_EQ(c.root["pipelines"]["orb"]["features"]["levels"].as<int>(), 4);
    EXPECT_EQ(c.root["pipelines"]["orb"]["features"].size(), 3u);
    EXPECT_EQ(c.root["pipelines"].size(), 1u);
}

TEST(ConfigOverride, CreatesMissingMapsAndParsesYamlValues) {
    ::setenv("SIGHTLINE_TEST_OVERRIDE_VAR", "/env/root", 1);
    auto c = load_config_text("gallery: { storage: gallery }\n", "o.yaml");
    apply_override(c, "limits.queue=7");
    apply_override(c, "a.b.c.d=[x, y]");
    apply_override(c, "storages.gallery.root=${SIGHTLINE_TEST_OVERRIDE_VAR}/g");
    ASSERT_TRUE(c.root["limits"].IsMap());
    EXPECT_EQ(c.root["limits"]["queue"].as<int>(), 7);
    ASSERT_TRUE(c.root["a"]["b"]["c"]["d"].IsSequence());
    EXPECT_EQ(c.root["a"]["b"]["c"]["d"][1].as<std::string>(), "y");
    EXPECT_EQ(c.root["storages"]["gallery"]["root"].as<std::string>(), "/env/root/g");
    EXPECT_EQ(c.root["gallery"]["storage"].as<std::string>(), "gallery");
    ::unsetenv("SIGHTLINE_TEST_OVERRIDE_VAR");
}

// Issue 22: a list or map value given with --set expands ${VAR} in every scalar, as a file does.
TEST(ConfigOverride, ExpandsVariablesInsideListsAndMaps) {
    ::setenv("SIGHTLINE_TEST_OVERRIDE_TOKEN", "s3cret", 1);
    auto c = load_config_text("gallery: { storage: gallery }\n", "o.yaml");
    apply_override(c, R"(transports=[{type: http, listen: "127.0.0.1:8080",)"
                      R"( token: "${SIGHTLINE_TEST_OVERRIDE_TOKEN}"}])");
    apply_override(c, "a.b={x: [\"pre-${SIGHTLINE_TEST_OVERRIDE_TOKEN}\", {y: \"${SIGHTLINE_TEST_OVERRIDE_TOKEN}\"}]}");
    ::unsetenv("SIGHTLINE_TEST_OVERRIDE_TOKEN");
    ASSERT_TRUE(c.root["transports"].IsSequence());
    EXPECT_EQ(c.root["transports"][0]["token"].as<std::string>(), "s3cret");
    EXPECT_EQ(c.root["transports"][0]["listen"].as<std::string>(), "127.0.0.1:8080");
    EXPECT_EQ(c.root["a"]["b"]["x"][0].as<std::string>(), "pre-s3cret");
    EXPECT_EQ(c.root["a"]["b"]["x"][1]["y"].as<std::string>(), "s3cret");
}

TEST(ConfigOverride, UnsetVariableInsideAListIsAnError) {
    ::unsetenv("SIGHTLINE_TEST_SURELY_UNSET");
    auto c = load_config_text("gallery: { storage: gallery }\n", "o.yaml");
    Error e = capture_error(
        [&] { apply_override(c, R"(transports=[{type: http, token: "${SIGHTLINE_TEST_SURELY_UNSET}"}])"); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("--set")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("transports[0].token")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("SIGHTLINE_TEST_SURELY_UNSET")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("not set")) << e.what();
    EXPECT_FALSE(c.root["transports"]) << "a refused --set must change nothing";
}

TEST(ConfigOverride, BadAssignmentsAreRefused) {
    auto c = load_config_text("limits: { queue: 3 }\n", "o.yaml");
    for (const char* bad : {"noequals", "=value", "a..b=1", "limits.queue.x=1", "x=[unclosed"}) {
        Error e = capture_error([&] { apply_override(c, bad); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << bad;
        EXPECT_THAT(e.what(), HasSubstr("--set")) << bad << " → " << e.what();
    }
    EXPECT_EQ(c.root["limits"]["queue"].as<int>(), 3);
}

// --- YAML syntax ----------------------------------------------------------------------------------

TEST(ConfigSyntax, SyntaxErrorHasTheLineNumber) {
    std::string text =
        "logging: { level: info }\n"       // 1
        "limits: { queue: 3 }\n"           // 2
        "pipelines: { orb: [1, 2 }\n"      // 3: a flow sequence closed by '}'
        "gallery: { storage: g }\n";       // 4
    Error e = capture_error([&] { load_config_text(text, "syntax.yaml"); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr("YAML syntax error")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("syntax.yaml:3:")) << e.what();
}

TEST(ConfigSyntax, TopLevelMustBeAMapping) {
    Error e = capture_error([&] { load_config_text("- a\n- b\n", "list.yaml"); });
    EXPECT_THAT(e.what(), HasSubstr("list.yaml")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("mapping")) << e.what();
}

TEST(ConfigSyntax, MissingFileIsNotFound) {
    TempDir d;
    Error e = capture_error([&] { load_config_file((d / "nope.yaml").string()); });
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_THAT(e.what(), HasSubstr("nope.yaml"));
}

TEST(ConfigSyntax, FileMessagesUseThePathGiven) {
    TempDir d;
    fs::path f = d / "c.yaml";
    write_text(f, "a: 1\nb: [\n");
    Error e = capture_error([&] { load_config_file(f.string()); });
    EXPECT_THAT(e.what(), HasSubstr(f.string() + ":")) << e.what();
}

// --- sizes and durations --------------------------------------------------------------------------

TEST(ConfigUnits, BytesParse) {
    EXPECT_EQ(parse_bytes("20MB"), 20'000'000u);
    EXPECT_EQ(parse_bytes("20MiB"), 20u * 1024 * 1024);
    EXPECT_EQ(parse_bytes("512KiB"), 512u * 1024);
    EXPECT_EQ(parse_bytes("512kb"), 512'000u);
    EXPECT_EQ(parse_bytes("1048576"), 1048576u);
    EXPECT_EQ(parse_bytes("50M"), 50'000'000u);
    EXPECT_EQ(parse_bytes("1.5GB"), 1'500'000'000u);
    EXPECT_EQ(parse_bytes(" 7 B "), 7u);
}

TEST(ConfigUnits, BytesRejectNonsense) {
    for (const char* bad : {"", "lots", "MB", "20XB", "-5MB", "1.2.3MB", "20 MB extra", "0x10", "1e3", "NaN"})
        EXPECT_FALSE(parse_bytes(bad).has_value()) << "'" << bad << "' parsed as " << parse_bytes(bad).value_or(0);
}

TEST(ConfigUnits, DurationsParse) {
    using std::chrono::milliseconds;
    EXPECT_EQ(parse_duration("5s"), milliseconds(5000));
    EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
    EXPECT_EQ(parse_duration("2m"), milliseconds(120000));
    EXPECT_EQ(parse_duration("1.5s"), milliseconds(1500));
    EXPECT_EQ(parse_duration("1h"), milliseconds(3600000));
}

TEST(ConfigUnits, DurationsRejectNonsense) {
    for (const char* bad : {"", "5", "soon", "5 parsecs", "ms", "-5s", "5sec", "5s5"})
        EXPECT_FALSE(parse_duration(bad).has_value()) << "'" << bad << "' parsed";
}

TEST(ConfigUnits, GettersReportFileLineAndKeyPath) {
    static const ConfigKey keys[] = {
        {.name = "size", .type = ConfigType::bytes, .default_value = "1KB"},
        {.name = "wait", .type = ConfigType::duration, .default_value = "1s"},
        {.name = "flag", .type = ConfigType::boolean, .default_value = "false"},
    };
    auto c = load_config_text("x:\n  size: huge\n  wait: 250ms\n  flag: maybe\n", "g.yaml");
    Config view(c.root["x"], "g.yaml", "x", keys);
    EXPECT_EQ(view.get_duration("wait"), std::chrono::milliseconds(250));
    Error e = capture_error([&] { (void)view.get_bytes("size"); });
    EXPECT_THAT(e.what(), HasSubstr("g.yaml:2: x.size: expected a size such as 512KB or 20MB, found 'huge'"));
    e = capture_error([&] { (void)view.get_bool("flag"); });
    EXPECT_THAT(e.what(), HasSubstr("g.yaml:4: x.flag: expected true or false, found 'maybe'"));
}

TEST(ConfigSuggest, DidYouMean) {
    EXPECT_EQ(did_you_mean("max_feature", {"max_features", "levels"}), "max_features");
    EXPECT_EQ(did_you_mean("orbb", {"orb", "surf"}), "orb");
    EXPECT_EQ(did_you_mean("completely_different", {"orb", "surf"}), "");
}

}  // namespace

// query_features lays keys over `features`; a required key of the plugin comes from there.
TEST_F(ConfigTest, QueryFeaturesOverlayNeedsNoRequiredKeysOfItsOwn) {
    auto errors = check(config_text({"type: opencv", "algorithm: sift"}, "    query_features: { max_features: 2000 }\n"));
    EXPECT_TRUE(errors.empty()) << join(errors);
}

TEST_F(ConfigTest, QueryFeaturesUnknownKeyIsCheckedAgainstThePluginSchema) {
    auto errors = check(config_text({"type: orb"}, "    query_features: { max_feature: 2000 }\n"));
    ASSERT_EQ(errors.size(), 1u) << join(errors);
    EXPECT_THAT(errors[0], HasSubstr("cfg.yaml:11")) << errors[0];
    EXPECT_THAT(errors[0], HasSubstr("pipelines.orb.query_features")) << errors[0];
    EXPECT_THAT(errors[0], HasSubstr("did you mean 'max_features'")) << errors[0];
}
