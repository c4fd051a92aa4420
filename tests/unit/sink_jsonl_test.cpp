// sink-jsonl, loaded as the real plugin through a Host built from a config (storage-local in a temp
// dir): the line format, rolling by count and by interval, flush on shutdown, retry after storage
// failures without loss, the max_buffered bound, thread safety and config validation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "sightline/host/host.hpp"
#include "sightline/host/result_json.hpp"
#include "sightline/host/service.hpp"
#include "test_support.hpp"

#include <chrono>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

namespace {

Event make_event(int i) {
    Event e;
    e.result.request_id = "r" + std::to_string(i);
    e.result.variant = "orb";
    Match m;
    m.id = "poster" + std::to_string(i % 3);
    m.score = 0.61234;
    m.inliers = 42;
    m.polygon = {cv::Point2f(1.04f, 2.0f), cv::Point2f(100.0f, 2.0f), cv::Point2f(100.0f, 50.46f), cv::Point2f(1.0f, 50.0f)};
    m.metadata_json = R"({"title": "Poster", "n": 3})";
    e.result.matches.push_back(m);
    e.result.timings_ms = {{"decode", 1.234}, {"total", 9.876}};
    e.client_fields = {{"client_id", "c" + std::to_string(i)}, {"pos_x", "12.5"}};
    return e;
}

// Polls until pred holds or the timeout passes; the timeout is a bound, not the thing asserted.
bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 15s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (pred()) return true;
        std::this_thread::sleep_for(10ms);
    }
    return pred();
}

class SinkJsonl : public ::testing::Test {
protected:
    // A Host whose only sink is `{type: jsonl, <sink_keys>}`, with the storages "gallery" and "archive".
    std::unique_ptr<Host> make_host(const std::string& sink_keys) {
        const fs::path cfg = dir_ / "sightline.yaml";
        std::string text;
        text += "plugins: { paths: [" + yq(plugin_dir()) + "] }\n";
        text += "storages:\n";
        text += "  gallery: { type: local, root: " + yq(dir_ / "gallery") + ", fsync: false }\n";
        text += "  archive: { type: local, root: " + yq(archive()) + ", fsync: false }\n";
        text += "gallery: { storage: gallery }\n";
        text += "pipelines:\n  orb: { features: { type: orb, max_features: 500 }, index: { type: bruteforce } }\n";
        text += "sinks:\n  - { type: jsonl" + (sink_keys.empty() ? std::string() : ", " + sink_keys) + " }\n";
        text += "limits: { workers: 2, queue: 8 }\n";
        text += "logging: { level: off }\n";
        write_text(cfg, text);
        return std::make_unique<Host>(load_config_file(cfg.string()));
    }

    static ResultSink& sink(Host& h) { return *h.sinks().at(0).sink; }
    fs::path archive() const { return dir_ / "archive"; }

    // The objects under archive/<prefix>, by key (sorted, so in write order); temp files excluded.
    std::vector<std::string> objects(const std::string& prefix = "results/") const {
        std::vector<std::string> keys;
        std::error_code ec;
        const fs::path start = archive() / prefix;
        if (!fs::is_directory(start, ec)) return keys;
        for (fs::recursive_directory_iterator it(start, ec), end; !ec && it != end; it.increment(ec)) {
            if (!it->is_regular_file(ec)) continue;
            // Lexical: fs::relative resolves the path and throws when the background writer
            // renames a temp file away between the walk and this line.
            std::string key = it->path().lexically_relative(archive()).generic_string();
            if (key.find("~tmp~") == std::string::npos) keys.push_back(key);
        }
        std::sort(keys.begin(), keys.end());
        return keys;
    }

    std::vector<nlohmann::json> lines_of(const std::string& key) const {
        std::vector<nlohmann::json> out;
        const std::string text = read_text(archive() / key);
        EXPECT_TRUE(!text.empty() && text.back() == '\n') << key << " does not end with a newline";
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) {
            EXPECT_FALSE(line.empty()) << "empty line in " << key;
            out.push_back(nlohmann::json::parse(line));  // throws (fails the test) if not JSON
        }
        return out;
    }

    std::vector<nlohmann::json> all_lines() const {
        std::vector<nlohmann::json> out;
        for (const auto& k : objects())
            for (auto& l : lines_of(k)) out.push_back(std::move(l));
        return out;
    }

    std::size_t line_count() const {
        std::size_t n = 0;
        for (const auto& k : objects()) n += lines_of(k).size();
        return n;
    }

    static std::vector<std::string> ids(const std::vector<nlohmann::json>& lines) {
        std::vector<std::string> out;
        for (const auto& l : lines) out.push_back(l.at("request_id").get<std::string>());
        return out;
    }

    static std::vector<std::string> expected_ids(int from, int to) {
        std::vector<std::string> out;
        for (int i = from; i < to; ++i) out.push_back("r" + std::to_string(i));
        return out;
    }

    static double metric(Host& h, const std::string& series) {
        std::istringstream in(h.metrics().render());
        for (std::string line; std::getline(in, line);)
            if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
        return 0;
    }

    // A regular file where the sink's directory should be: every put fails, also as root.
    void block_storage() { write_text(archive() / "results", "in the way"); }
    void unblock_storage() { fs::remove(archive() / "results"); }

    TempDir dir_{"sightline-sink-jsonl"};
};

TEST_F(SinkJsonl, WritesOneJsonLinePerResultWithTheApiFields) {
    auto host = make_host("storage: archive");
    Event ok = make_event(0);
    ok.client_fields["note"] = std::string("bad \xff utf-8");
    Event failed;
    failed.result.request_id = "r1";
    failed.result.variant = "orb";
    failed.result.error = ErrorInfo{"invalid_argument", "the image is empty (0 bytes)"};
    sink(*host).publish(ok);
    sink(*host).publish(failed);
    sink(*host).flush();

    auto keys = objects();
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_TRUE(std::regex_match(keys[0], std::regex(R"(results/\d{8}-\d{6}-\d{6}-[0-9a-f]{12}\.jsonl)"))) << keys[0];
    auto lines = lines_of(keys[0]);
    ASSERT_EQ(lines.size(), 2u);

    const auto& a = lines[0];
    EXPECT_EQ(a.at("request_id"), "r0");
    EXPECT_EQ(a.at("variant"), "orb");
    ASSERT_EQ(a.at("matches").size(), 1u);
    const auto& m = a.at("matches")[0];
    EXPECT_EQ(m.at("id"), "poster0");
    EXPECT_DOUBLE_EQ(m.at("score").get<double>(), 0.612);
    EXPECT_EQ(m.at("inliers"), 42);
    EXPECT_EQ(m.at("polygon"), nlohmann::json::parse("[[1.0, 2.0], [100.0, 2.0], [100.0, 50.5], [1.0, 50.0]]"));
    EXPECT_EQ(m.at("metadata"), nlohmann::json::parse(R"({"title": "Poster", "n": 3})"));
    EXPECT_DOUBLE_EQ(a.at("timings_ms").at("decode").get<double>(), 1.23);
    EXPECT_DOUBLE_EQ(a.at("timings_ms").at("total").get<double>(), 9.88);
    EXPECT_EQ(a.at("client_fields").at("client_id"), "c0");
    EXPECT_EQ(a.at("client_fields").at("pos_x"), "12.5");
    EXPECT_EQ(a.at("client_fields").at("note"), "bad \xEF\xBF\xBD utf-8");  // U+FFFD, not a lost line
    EXPECT_FALSE(a.contains("error"));
    // The same matches and timings as the HTTP API's JSON for the same result.
    const auto api = to_json(ok.result);
    EXPECT_EQ(a.at("matches"), api.at("matches"));
    EXPECT_EQ(a.at("timings_ms"), api.at("timings_ms"));

    const std::regex iso(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");
    for (const auto& l : lines) EXPECT_TRUE(std::regex_match(l.at("time").get<std::string>(), iso)) << l.dump();
    // The object's name carries the same UTC date as the lines.
    const std::string t = a.at("time");
    EXPECT_EQ(keys[0].substr(8, 8), t.substr(0, 4) + t.substr(5, 2) + t.substr(8, 2));

    const auto& b = lines[1];
    EXPECT_EQ(b.at("request_id"), "r1");
    EXPECT_EQ(b.at("matches"), nlohmann::json::array());
    EXPECT_EQ(b.at("client_fields"), nlohmann::json::object());
    EXPECT_EQ(b.at("error"), nlohmann::json::parse(R"j({"code": "invalid_argument", "message": "the image is empty (0 bytes)"})j"));
}

struct RollCase {
    int lines;
    int roll_every;
};
void PrintTo(const RollCase& c, std::ostream* os) { *os << c.lines << "_lines_every_" << c.roll_every; }

class SinkJsonlRollEvery : public SinkJsonl, public ::testing::WithParamInterface<RollCase> {};

TEST_P(SinkJsonlRollEvery, MakesCeilNOverRollEveryObjects) {
    const int n = GetParam().lines, every = GetParam().roll_every;
    auto host = make_host("storage: archive, prefix: results/, roll_interval: 1h, roll_every: " + std::to_string(every));
    for (int i = 0; i < n; ++i) sink(*host).publish(make_event(i));
    // Full batches are written in the background without a flush; the remainder waits (interval 1h).
    const std::size_t full = static_cast<std::size_t>(n / every);
    ASSERT_TRUE(wait_for([&] { return line_count() == full * static_cast<std::size_t>(every); }))
        << "background writer did not write the " << full << " full batches";
    EXPECT_EQ(objects().size(), full);
    sink(*host).flush();
    const auto keys = objects();
    EXPECT_EQ(keys.size(), static_cast<std::size_t>((n + every - 1) / every));
    for (std::size_t k = 0; k < keys.size(); ++k) {
        const int expected = k + 1 < keys.size() ? every : n - every * static_cast<int>(keys.size() - 1);
        EXPECT_EQ(lines_of(keys[k]).size(), expected) << keys[k];
    }
    EXPECT_EQ(ids(all_lines()), expected_ids(0, n));  // in order, each once
    EXPECT_EQ(metric(*host, R"(sightline_sink_jsonl_lines_written_total{storage="archive",prefix="results/"})"), n);
    EXPECT_EQ(metric(*host, R"(sightline_sink_jsonl_objects_written_total{storage="archive",prefix="results/"})"), keys.size());
    EXPECT_EQ(metric(*host, R"(sightline_sink_jsonl_buffered_lines{storage="archive",prefix="results/"})"), 0);
}

INSTANTIATE_TEST_SUITE_P(Counts, SinkJsonlRollEvery,
                         ::testing::Values(RollCase{7, 3}, RollCase{6, 3}, RollCase{1, 5}, RollCase{5, 1}, RollCase{25, 10}));

TEST_F(SinkJsonl, RollsAfterTheIntervalWithoutAFlush) {
    auto host = make_host("storage: archive, roll_every: 1000, roll_interval: 200ms");
    for (int i = 0; i < 3; ++i) sink(*host).publish(make_event(i));
    ASSERT_TRUE(wait_for([&] { return line_count() == 3; })) << "the interval roll did not happen";
    EXPECT_EQ(objects().size(), 1u);
    for (int i = 3; i < 5; ++i) sink(*host).publish(make_event(i));
    ASSERT_TRUE(wait_for([&] { return line_count() == 5; })) << "the second interval roll did not happen";
    EXPECT_EQ(objects().size(), 2u);
    EXPECT_EQ(ids(all_lines()), expected_ids(0, 5));
}

TEST_F(SinkJsonl, HostShutdownFlushWritesTheRemainder) {
    auto host = make_host("storage: archive, roll_every: 1000, roll_interval: 1h");
    {
        HostService service(*host);
        for (int i = 0; i < 5; ++i) sink(*host).publish(make_event(i));
        EXPECT_TRUE(objects().empty());  // neither 1000 lines nor an hour
        service.drain(0ms);
        service.flush_sinks();
    }
    ASSERT_EQ(objects().size(), 1u);
    EXPECT_EQ(ids(all_lines()), expected_ids(0, 5));
    EXPECT_EQ(metric(*host, R"m(sightline_sink_failures_total{sink="sinks[0] (sink-jsonl)"})m"), 0);
}

TEST_F(SinkJsonl, DestructionWritesTheRemainder) {
    auto host = make_host("storage: archive, roll_every: 1000, roll_interval: 1h");
    for (int i = 0; i < 4; ++i) sink(*host).publish(make_event(i));
    host.reset();  // no flush(): the sink writes what it holds when it is destroyed
    ASSERT_EQ(objects().size(), 1u);
    EXPECT_EQ(ids(all_lines()), expected_ids(0, 4));
}

TEST_F(SinkJsonl, FailingStorageKeepsTheLinesAndWritesThemOnceItWorks) {
    auto host = make_host("storage: archive, roll_every: 2, roll_interval: 200ms");
    const std::string failures = R"(sightline_sink_jsonl_write_failures_total{storage="archive",prefix="results/"})";
    block_storage();
    for (int i = 0; i < 5; ++i) EXPECT_NO_THROW(sink(*host).publish(make_event(i)));
    ASSERT_TRUE(wait_for([&] { return metric(*host, failures) >= 2; })) << "the background writer did not retry";

    // flush() reports the failure (the host logs and counts it) and keeps the lines.
    Error e = capture_error([&] { sink(*host).flush(); });
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_THAT(e.what(), HasSubstr("5 lines could not be written to storage 'archive'"));
    EXPECT_THAT(e.what(), HasSubstr("stay buffered"));
    {
        HostService service(*host);
        service.flush_sinks();  // the host's shutdown path: logged and counted, not thrown
        EXPECT_EQ(metric(*host, R"m(sightline_sink_failures_total{sink="sinks[0] (sink-jsonl)"})m"), 1);
    }
    EXPECT_EQ(metric(*host, R"(sightline_sink_jsonl_buffered_lines{storage="archive",prefix="results/"})"), 5);
    for (int i = 5; i < 7; ++i) EXPECT_NO_THROW(sink(*host).publish(make_event(i)));

    unblock_storage();
    // The next roll (one roll_interval after the last failure) writes everything, without a flush.
    ASSERT_TRUE(wait_for([&] { return line_count() == 7; })) << "buffered lines were not written after recovery";
    EXPECT_EQ(ids(all_lines()), expected_ids(0, 7));  // nothing lost, nothing twice, in order
    for (const auto& k : objects()) EXPECT_LE(lines_of(k).size(), 2u) << k;
    EXPECT_EQ(objects().size(), 4u);
    EXPECT_GE(metric(*host, failures), 2);
    EXPECT_EQ(metric(*host, R"(sightline_sink_jsonl_buffered_lines{storage="archive",prefix="results/"})"), 0);
    EXPECT_NO_THROW(sink(*host).flush());
}

TEST_F(SinkJsonl, MaxBufferedIsEnforcedAndTheHostCountsTheRefusal) {
    auto host = make_host("storage: archive, roll_every: 2, max_buffered: 4, roll_interval: 1h");
    block_storage();
    for (int i = 0; i < 4; ++i) sink(*host).publish(make_event(i));
    Error e = capture_error([&] { sink(*host).publish(make_event(4)); });
    EXPECT_EQ(e.code(), ErrorCode::resource_exhausted);
    EXPECT_THAT(e.what(), HasSubstr("4 lines are buffered (max_buffered)"));
    EXPECT_THAT(e.what(), HasSubstr("storage 'archive'"));
    EXPECT_THAT(e.what(), HasSubstr("request 'r4' was not recorded"));

    // Through the host: the recognition still answers, the sink's refusal is counted.
    {
        HostService service(*host);
        Request r;
        r.id = "q-refused";
        r.image = to_bytes("not an image");
        Result result = service.recognize(r);
        ASSERT_TRUE(result.error.has_value());
        EXPECT_EQ(metric(*host, R"m(sightline_sink_failures_total{sink="sinks[0] (sink-jsonl)"})m"), 1);
    }

    unblock_storage();
    sink(*host).flush();
    EXPECT_EQ(ids(all_lines()), expected_ids(0, 4));
    sink(*host).publish(make_event(5));  // room again
    sink(*host).flush();
    EXPECT_EQ(line_count(), 5u);
}

TEST_F(SinkJsonl, ConcurrentPublishLosesNothing) {
    constexpr int kThreads = 4, kPerThread = 250, kEvery = 50;
    auto host = make_host("storage: archive, roll_interval: 1h, roll_every: " + std::to_string(kEvery));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) sink(*host).publish(make_event(t * kPerThread + i));
        });
    for (auto& t : threads) t.join();
    sink(*host).flush();
    const auto keys = objects();
    EXPECT_EQ(keys.size(), static_cast<std::size_t>(kThreads * kPerThread / kEvery));
    for (const auto& k : keys) EXPECT_EQ(lines_of(k).size(), static_cast<std::size_t>(kEvery)) << k;
    auto got = ids(all_lines());
    std::sort(got.begin(), got.end());
    auto want = expected_ids(0, kThreads * kPerThread);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(got, want);
}

TEST_F(SinkJsonl, RecognitionsThroughTheServiceAreRecorded) {
    auto host = make_host("storage: archive, prefix: runs/today/");
    const auto images = gallery_images();
    ASSERT_GE(images.size(), 2u);
    HostService service(*host);
    service.load_gallery();
    for (std::size_t i = 0; i < 2; ++i)
        service.put_item(images[i].stem().string(), read_bytes(images[i]),
                         R"({"title": ")" + images[i].stem().string() + R"("})");
    Request q;
    q.id = "q-match";
    q.image = read_bytes(images[1]);
    q.client_fields = {{"client_id", "phone-7"}};
    const Result matched = service.recognize(q);
    ASSERT_FALSE(matched.matches.empty());
    Request bad;
    bad.id = "q-bad";
    bad.image = to_bytes("\xFF\xD8 truncated");
    const Result failed = service.recognize(bad);
    ASSERT_TRUE(failed.error.has_value());
    service.flush_sinks();

    const auto keys = objects("runs/today/");
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(keys[0].rfind("runs/today/", 0), 0u);
    const auto lines = lines_of(keys[0]);
    ASSERT_EQ(lines.size(), 2u);
    const auto api = to_json(matched);
    EXPECT_EQ(lines[0].at("request_id"), "q-match");
    EXPECT_EQ(lines[0].at("variant"), "orb");
    EXPECT_EQ(lines[0].at("matches"), api.at("matches"));
    EXPECT_EQ(lines[0].at("matches")[0].at("id"), images[1].stem().string());
    EXPECT_EQ(lines[0].at("matches")[0].at("metadata").at("title"), images[1].stem().string());
    EXPECT_EQ(lines[0].at("matches")[0].at("polygon").size(), 4u);
    EXPECT_EQ(lines[0].at("timings_ms"), api.at("timings_ms"));
    EXPECT_EQ(lines[0].at("client_fields"), nlohmann::json::parse(R"({"client_id": "phone-7"})"));
    EXPECT_EQ(lines[1].at("request_id"), "q-bad");
    EXPECT_EQ(lines[1].at("error").at("code"), "invalid_argument");
    EXPECT_EQ(lines[1].at("error").at("message"), failed.error->message);
}

struct BadConfig {
    const char* name;
    const char* keys;
    std::vector<std::string> expected;  // substrings of the message
};
void PrintTo(const BadConfig& c, std::ostream* os) { *os << c.name; }

class SinkJsonlBadConfig : public SinkJsonl, public ::testing::WithParamInterface<BadConfig> {};

TEST_P(SinkJsonlBadConfig, IsRefusedWithAClearMessage) {
    Error e = capture_error([&] { make_host(GetParam().keys); });
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
    for (const auto& s : GetParam().expected) EXPECT_THAT(e.what(), HasSubstr(s));
    EXPECT_THAT(e.what(), HasSubstr("sightline.yaml:"));  // file:line
}

INSTANTIATE_TEST_SUITE_P(
    Keys, SinkJsonlBadConfig,
    ::testing::Values(
        BadConfig{"missing_storage", "", {"sinks[0].storage: required key is missing"}},
        BadConfig{"unknown_key", "storage: archive, roll_evry: 5",
                  {"sinks[0]: unknown key 'roll_evry'", "did you mean 'roll_every'?", "max_buffered"}},
        BadConfig{"roll_every_zero", "storage: archive, roll_every: 0",
                  {"sinks[0].roll_every: expected a value between 1 and", "found 0"}},
        BadConfig{"roll_every_not_a_number", "storage: archive, roll_every: many",
                  {"sinks[0].roll_every: expected an integer, found 'many'"}},
        BadConfig{"roll_interval_not_a_duration", "storage: archive, roll_interval: soon",
                  {"sinks[0].roll_interval: expected a duration such as 250ms or 5s, found 'soon'"}},
        BadConfig{"roll_interval_too_short", "storage: archive, roll_interval: 1ms",
                  {"sinks[0].roll_interval: expected a value between 10 and", "found 1ms"}},
        BadConfig{"max_buffered_negative", "storage: archive, max_buffered: -5",
                  {"sinks[0].max_buffered: expected a value between 1 and", "found -5"}},
        BadConfig{"max_buffered_below_roll_every", "storage: archive, roll_every: 100, max_buffered: 10",
                  {"sinks[0].max_buffered: must be at least roll_every (100), found 10"}},
        BadConfig{"storage_list", "storage: [archive]", {"sinks[0].storage: expected a single value, found a list"}},
        BadConfig{"unknown_storage", "storage: archiv",
                  {"sinks[0].storage: no storage named 'archiv' (configured: archive, gallery)"}},
        BadConfig{"absolute_prefix", "storage: archive, prefix: /results/",
                  {"sinks[0].prefix: '/results/' does not make valid storage keys", "relative"}},
        BadConfig{"prefix_bad_character", "storage: archive, prefix: \"my results/\"",
                  {"sinks[0].prefix: 'my results/' does not make valid storage keys", "0x20"}},
        BadConfig{"prefix_dotdot", "storage: archive, prefix: ../up/", {"sinks[0].prefix", "'..' segment"}}));

}  // namespace
