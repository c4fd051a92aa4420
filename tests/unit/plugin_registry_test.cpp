// The plugin registry: real plugins load, everything else is refused with a message that names
// the file, and objects keep their library loaded.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>

#include <fstream>
#include <regex>
#include <sstream>
#include <set>

#include "sightline/host/host.hpp"
#include "sightline/host/metrics_registry.hpp"
#include "sightline/host/plugin_registry.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;

namespace {

TEST(PluginRegistry, FileNameFollowsKindAndName) {
    EXPECT_EQ(plugin_file_name(PluginKind::features, "orb"), "libsightline_features_orb.so");
    EXPECT_EQ(plugin_file_name(PluginKind::storage, "my-store"), "libsightline_storage_my_store.so");
}

TEST(PluginRegistry, LoadsTheRealPlugins) {
    PluginRegistry registry({plugin_dir()});
    registry.load_all();
    EXPECT_TRUE(registry.refused().empty()) << registry.refused().front().reason;

    const LoadedPlugin& orb = registry.get(PluginKind::features, "orb");
    ASSERT_NE(orb.manifest, nullptr);
    EXPECT_EQ(orb.manifest->kind, PluginKind::features);
    EXPECT_STREQ(orb.manifest->name, "orb");
    EXPECT_EQ(orb.full_name(), "features-orb");
    EXPECT_EQ(orb.manifest->abi_major, static_cast<std::uint32_t>(SIGHTLINE_ABI_MAJOR));
    EXPECT_STREQ(orb.manifest->build_id, SIGHTLINE_BUILD_ID);
    EXPECT_EQ(orb.file.filename(), "libsightline_features_orb.so");
    // The schema is readable without constructing anything.
    std::set<std::string> keys;
    for (const auto& k : orb.schema()) keys.insert(k.name);
    EXPECT_TRUE(keys.count("max_features"));

    EXPECT_NE(registry.find(PluginKind::index, "bruteforce"), nullptr);
    EXPECT_NE(registry.find(PluginKind::storage, "local"), nullptr);
    // Kinds are separate namespaces.
    EXPECT_EQ(registry.find(PluginKind::index, "orb"), nullptr);
}

TEST(PluginRegistry, LoadFileTwiceIsRefused) {
    PluginRegistry registry({});
    const auto file = plugin_dir() / "libsightline_features_orb.so";
    registry.load_file(file);
    Error e = capture_error([&] { registry.load_file(file); });
    EXPECT_EQ(e.code(), ErrorCode::already_exists);
    EXPECT_THAT(e.what(), HasSubstr("already loaded"));
}

TEST(PluginRegistry, BadAbiIsRefusedNamingFileAndBothVersions) {
    PluginRegistry registry({});
    const auto file = fixture_bad_dir() / "libsightline_features_badabi.so";
    ASSERT_TRUE(fs::exists(file)) << file;
    Error e = capture_error([&] { registry.load_file(file); });
    EXPECT_EQ(e.code(), ErrorCode::unsupported);
    EXPECT_THAT(e.what(), HasSubstr(file.string()));
    EXPECT_THAT(e.what(), HasSubstr("99.0"));
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(SIGHTLINE_ABI_MAJOR) + "."));
    EXPECT_TRUE(registry.plugins().empty());
}

TEST(PluginRegistry, LibraryWithoutManifestIsNotAPlugin) {
    PluginRegistry registry({});
    const auto file = fixture_bad_dir() / "libsightline_features_notaplugin.so";
    ASSERT_TRUE(fs::exists(file)) << file;
    Error e = capture_error([&] { registry.load_file(file); });
    EXPECT_THAT(e.what(), HasSubstr(file.string()));
    EXPECT_THAT(e.what(), HasSubstr("is not a sightline plugin"));
}

TEST(PluginRegistry, TextFileIsNotAPlugin) {
    PluginRegistry registry({});
    const auto file = fixture_bad_dir() / "libsightline_features_textfile.so";
    ASSERT_TRUE(fs::exists(file)) << file;
    Error e = capture_error([&] { registry.load_file(file); });
    EXPECT_THAT(e.what(), HasSubstr(file.string()));
    EXPECT_THAT(e.what(), HasSubstr("is not a sightline plugin"));
}

TEST(PluginRegistry, MissingFileIsNotAPlugin) {
    TempDir d;
    PluginRegistry registry({});
    Error e = capture_error([&] { registry.load_file(d / "libsightline_features_ghost.so"); });
    EXPECT_THAT(e.what(), HasSubstr("libsightline_features_ghost.so"));
}

TEST(PluginRegistry, RenamedPluginIsRefused) {
    TempDir d;
    fs::copy_file(plugin_dir() / "libsightline_features_orb.so", d / "libsightline_features_other.so");
    PluginRegistry registry({});
    Error e = capture_error([&] { registry.load_file(d / "libsightline_features_other.so"); });
    EXPECT_THAT(e.what(), HasSubstr("libsightline_features_orb.so")) << e.what();
}

// Issue 22: dlopen of a truncated copy of a plugin died of SIGBUS (every command crashed). The
// ELF headers are read first and the file is refused, named, before dlopen sees it.
TEST(PluginRegistry, TruncatedLibraryIsRefusedNamingTheFile) {
    TempDir d;
    const fs::path real = plugin_dir() / "libsightline_features_orb.so";
    const Bytes all = read_bytes(real);
    ASSERT_GT(all.size(), 20000u);
    const fs::path cut = d / "libsightline_features_orb.so";
    write_bytes(cut, Bytes(all.begin(), all.begin() + 20000));

    PluginRegistry registry({});
    Error e = capture_error([&] { registry.load_file(cut); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_THAT(e.what(), HasSubstr(cut.string()));
    EXPECT_THAT(e.what(), HasSubstr("truncated")) << e.what();
    EXPECT_TRUE(registry.plugins().empty());

    // First in the search path, it is refused and the real plugin after it is used.
    PluginRegistry both({d.path(), plugin_dir()});
    both.load_all();
    const LoadedPlugin* orb = both.find(PluginKind::features, "orb");
    ASSERT_NE(orb, nullptr);
    EXPECT_EQ(orb->file, real);
    ASSERT_FALSE(both.refused().empty());
    EXPECT_EQ(both.refused().front().file, cut);
}

TEST(PluginRegistry, ElfHeaderMismatchesAreRefusedNamingTheFile) {
    TempDir d;
    const Bytes all = read_bytes(plugin_dir() / "libsightline_features_orb.so");
    struct Case {
        const char* what;
        std::size_t offset;  // into the ELF header
        std::uint8_t value;
        const char* expected;
    };
    for (const Case& c : {Case{"32-bit class", 4, 1, "64-bit"}, Case{"an executable", 16, 2, "not a shared library"},
                          Case{"another machine", 18, 40, "machine 40"}}) {
        SCOPED_TRACE(c.what);
        Bytes bytes = all;
        bytes[c.offset] = c.value;
        if (c.offset == 18) bytes[19] = 0;
        const fs::path file = d / "libsightline_features_orb.so";
        write_bytes(file, bytes);
        PluginRegistry registry({});
        Error e = capture_error([&] { registry.load_file(file); });
        EXPECT_THAT(e.what(), HasSubstr(file.string()));
        EXPECT_THAT(e.what(), HasSubstr("is not a sightline plugin")) << e.what();
        EXPECT_THAT(e.what(), HasSubstr(c.expected)) << e.what();
    }
}

// Issue 22: a library that is not a plugin, earlier in plugins.paths than the real plugin of
// that file name, was skipped in silence. The warning names both files.
TEST(PluginRegistry, ANonPluginShadowingARealPluginIsWarnedAboutNamingBothFiles) {
    TempDir d;
    const fs::path shadow = d / "libsightline_features_orb.so";
    const fs::path real = plugin_dir() / "libsightline_features_orb.so";
    fs::copy_file(fixture_bad_dir() / "libsightline_features_notaplugin.so", shadow);
    std::ostringstream captured;
    auto logger = make_logger("plugins");
    auto capture = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
    logger->sinks().push_back(capture);
    PluginRegistry registry({d.path(), plugin_dir()});
    registry.load_all();
    logger->sinks().pop_back();

    const LoadedPlugin* orb = registry.find(PluginKind::features, "orb");
    ASSERT_NE(orb, nullptr);
    EXPECT_EQ(orb->file, real);
    std::string warning;
    std::istringstream lines(captured.str());
    for (std::string line; std::getline(lines, line);)
        if (line.find(shadow.string()) != std::string::npos) warning = line;
    ASSERT_FALSE(warning.empty()) << "no warning names " << shadow << "; logged:\n" << captured.str();
    EXPECT_THAT(warning, HasSubstr("warn"));
    EXPECT_THAT(warning, HasSubstr(real.string()));
    EXPECT_THAT(warning, HasSubstr("is not a sightline plugin"));

    // Two copies of a real plugin (an installed one after a build's) are not worth a warning.
    std::ostringstream quiet;
    auto capture_quiet = std::make_shared<spdlog::sinks::ostream_sink_mt>(quiet);
    logger->sinks().push_back(capture_quiet);
    TempDir copy;
    fs::copy_file(real, copy / "libsightline_features_orb.so");
    PluginRegistry twice({plugin_dir(), copy.path()});
    twice.load_all();
    logger->sinks().pop_back();
    EXPECT_EQ(quiet.str(), "");
}

TEST(PluginRegistry, LoadAllKeepsRefusalsAndGetExplainsThem) {
    PluginRegistry registry({plugin_dir(), fixture_bad_dir()});
    registry.load_all();
    EXPECT_NE(registry.find(PluginKind::features, "orb"), nullptr);
    std::set<std::string> refused;
    for (const auto& r : registry.refused()) refused.insert(r.file.filename().string());
    EXPECT_EQ(refused, (std::set<std::string>{"libsightline_features_badabi.so", "libsightline_features_notaplugin.so",
                                              "libsightline_features_textfile.so"}));

    Error e = capture_error([&] { registry.get(PluginKind::features, "badabi"); });
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_THAT(e.what(), HasSubstr("could not be loaded")) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("99.0")) << e.what();
}

TEST(PluginRegistry, GetMissingListsAvailablePluginsAndSearchPaths) {
    PluginRegistry registry({plugin_dir(), fixture_good_dir()});
    registry.load_all();
    Error e = capture_error([&] { registry.get(PluginKind::features, "freak"); });
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_THAT(e.what(), HasSubstr("'freak'"));
    EXPECT_THAT(e.what(), HasSubstr("libsightline_features_freak.so"));
    EXPECT_THAT(e.what(), HasSubstr(plugin_dir().string()));
    EXPECT_THAT(e.what(), HasSubstr(fixture_good_dir().string()));
    const std::string what = e.what();
    const auto available = what.substr(what.find("available: "));
    EXPECT_THAT(available, HasSubstr("orb")) << what;
    EXPECT_THAT(available, HasSubstr("counting")) << what;

    // A kind with no plugin at all in the search path (the fixtures hold no sink plugin).
    PluginRegistry fixtures_only({fixture_good_dir()});
    fixtures_only.load_all();
    e = capture_error([&] { fixtures_only.get(PluginKind::sink, "jsonl"); });
    EXPECT_THAT(e.what(), HasSubstr("available: none")) << e.what();
}

TEST(PluginRegistry, CreatedObjectKeepsTheLibraryAlive) {
    PluginRegistry registry({plugin_dir()});
    registry.load_all();
    const LoadedPlugin& orb = registry.get(PluginKind::features, "orb");
    const long before = orb.library.use_count();

    YAML::Node node = YAML::Load("{type: orb, max_features: 50}");
    MinimalContext ctx(Config(node, "t.yaml", "features", orb.schema()));
    auto extractor = registry.create<PluginKind::features>(orb, ctx);
    ASSERT_NE(extractor, nullptr);
    EXPECT_GT(orb.library.use_count(), before);
    EXPECT_THAT(extractor->signature(), HasSubstr("max_features=50"));

    // A copy of the pointer is a copy of the hold on the library, not a new one.
    {
        auto copy = extractor;
        EXPECT_EQ(orb.library.use_count(), before + 1);
    }
    // The object is usable through its interface.
    cv::Mat gray(200, 200, CV_8U);
    cv::randu(gray, 0, 256);
    auto f = extractor->extract(gray);
    EXPECT_GT(f.keypoints.size(), 0u);
    EXPECT_LE(f.keypoints.size(), 50u);

    extractor.reset();
    EXPECT_EQ(orb.library.use_count(), before);
}

TEST(PluginRegistry, ObjectOutlivesTheRegistry) {
    std::shared_ptr<FeatureExtractor> extractor;
    std::weak_ptr<boost::dll::shared_library> library;
    {
        PluginRegistry registry({plugin_dir()});
        registry.load_all();
        const LoadedPlugin& orb = registry.get(PluginKind::features, "orb");
        library = orb.library;
        MinimalContext ctx(Config(YAML::Load("{type: orb}"), "t.yaml", "features", orb.schema()));
        extractor = registry.create<PluginKind::features>(orb, ctx);
    }
    // The registry is gone; the object still holds the library, so its code is still mapped.
    EXPECT_FALSE(library.expired());
    EXPECT_THAT(extractor->signature(), HasSubstr("orb"));
    extractor.reset();
    EXPECT_TRUE(library.expired());
}

TEST(PluginRegistry, WrongKindIsRefused) {
    PluginRegistry registry({plugin_dir()});
    registry.load_all();
    const LoadedPlugin& orb = registry.get(PluginKind::features, "orb");
    MinimalContext ctx(Config(YAML::Load("{type: orb}"), "t.yaml", "x", orb.schema()));
    Error e = capture_error([&] { registry.create<PluginKind::index>(orb, ctx); });
    EXPECT_THAT(e.what(), HasSubstr("features-orb is a features plugin, not a")) << e.what();
}

// Whether `file` is mapped into this process (its library is loaded).
bool library_is_mapped(const fs::path& file) {
    const std::string real = fs::canonical(file).string();
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);)
        if (line.size() >= real.size() && line.compare(line.size() - real.size(), real.size(), real) == 0) return true;
    return false;
}

// Issue 22: an exception thrown inside a plugin was read after its library had been unloaded (a
// crash instead of the message). The host copies it into an Error of its own at the call.
TEST(PluginCalls, AnErrorFromAPluginIsReadableAfterItsLibraryIsUnloaded) {
    const fs::path file = fixture_good_dir() / "libsightline_features_throwing.so";
    ASSERT_TRUE(fs::exists(file)) << file;
    cv::Mat gray(64, 64, CV_8U, cv::Scalar(0));
    for (const std::string throw_in : {"create", "extract"}) {
        for (const std::string throw_as : {"own", "error"}) {
            SCOPED_TRACE(throw_in + ", " + throw_as);
            std::exception_ptr failure;
            {
                PluginRegistry registry({fixture_good_dir()});
                registry.load_all();
                const LoadedPlugin& plugin = registry.get(PluginKind::features, "throwing");
                YAML::Node node = YAML::Load("{type: throwing, message: 'the fixture says no', throw_in: " + throw_in +
                                             ", throw_as: " + throw_as + "}");
                MinimalContext ctx(Config(node, "t.yaml", "features", plugin.schema()));
                try {
                    auto extractor = registry.create<PluginKind::features>(plugin, ctx);
                    (void)extractor->extract(gray);
                } catch (...) {
                    failure = std::current_exception();
                }
                ASSERT_TRUE(library_is_mapped(file));
            }
            // Otherwise this test would prove nothing.
            ASSERT_FALSE(library_is_mapped(file)) << "the fixture library was not unloaded";
            ASSERT_TRUE(failure) << "nothing was thrown";
            Error e = capture_error([&] { std::rethrow_exception(failure); });
            EXPECT_THAT(e.what(), HasSubstr("the fixture says no"));
            if (throw_as == "error") {
                EXPECT_EQ(e.code(), ErrorCode::unavailable);
            } else {
                EXPECT_EQ(e.code(), ErrorCode::internal);
                EXPECT_THAT(e.what(), HasSubstr("features-throwing")) << e.what();
            }
        }
    }
}

// DESIGN.md: "core/ names no concrete plugin (a test greps for it)". Comments are documentation
// and are skipped; code and string literals are not. config/ holds the default config, and the
// embedded copy is generated into the build tree, so neither is scanned.
TEST(PluginPolicy, CoreNamesNoConcretePlugin) {
    const fs::path core = source_dir() / "core";
    ASSERT_TRUE(fs::is_directory(core)) << core;
    const std::regex names(
        R"((\borb\b|\bbruteforce\b|storage-local|features-orb|index-bruteforce|libsightline_features_orb|\bsurf\b|storage_local|features_orb))",
        std::regex::icase);
    std::vector<std::string> hits;
    std::size_t scanned = 0;
    for (const auto& entry : fs::recursive_directory_iterator(core)) {
        if (!entry.is_regular_file()) continue;
        const std::string ext = entry.path().extension().string();
        if (ext != ".cpp" && ext != ".hpp" && ext != ".in") continue;
        ++scanned;
        std::ifstream in(entry.path());
        bool in_block_comment = false;
        int line_no = 0;
        for (std::string line; std::getline(in, line);) {
            ++line_no;
            // Strip comments (// to end of line, /* ... */), keeping code and string literals.
            std::string code;
            bool in_string = false;
            for (std::size_t i = 0; i < line.size(); ++i) {
                if (in_block_comment) {
                    if (line.compare(i, 2, "*/") == 0) {
                        in_block_comment = false;
                        ++i;
                    }
                    continue;
                }
                if (!in_string && line.compare(i, 2, "//") == 0) break;
                if (!in_string && line.compare(i, 2, "/*") == 0) {
                    in_block_comment = true;
                    ++i;
                    continue;
                }
                if (line[i] == '"' && (i == 0 || line[i - 1] != '\\')) in_string = !in_string;
                code += line[i];
            }
            if (std::regex_search(code, names))
                hits.push_back(fs::relative(entry.path(), source_dir()).string() + ":" + std::to_string(line_no) +
                               ": " + line);
        }
    }
    EXPECT_GE(scanned, 10u) << "the scan found too few core sources; did the layout change?";
    std::string report;
    for (const auto& h : hits) report += "\n  " + h;
    EXPECT_TRUE(hits.empty()) << "core/ names a concrete plugin:" << report;
}

}  // namespace
