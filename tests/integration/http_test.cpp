// transport-http through real sockets: a Host + HostService + the http transport on 127.0.0.1 (the
// transport picks a free port itself, listen "127.0.0.1:0", and the test reads it from the log),
// driven with cpp-httplib's client and raw sockets; plus the real `sightline serve` for the
// graceful shutdown on SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sightline/synth/synth.hpp>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include "sightline/host/host.hpp"
#include "sightline/host/service.hpp"
#include "photos.hpp"
#include "test_support.hpp"

using namespace sightline;
using namespace sightline::host;
using namespace sightline::test;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kToken = "s3cret-Token_42";
constexpr std::size_t kItems = 10;        // the first demo images form the gallery
constexpr std::size_t kQueryItem = 8;     // an item the default pipeline finds in an easy photo

// --- helpers ------------------------------------------------------------------------------------

// Every line a logger writes, for the port, the access log and what must never be logged.
class CaptureSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    std::vector<std::string> lines() {
        std::lock_guard lock(mutex_);
        return lines_;
    }
    std::string text() {
        std::string all;
        for (const auto& l : lines()) all += l + "\n";
        return all;
    }

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        lines_.emplace_back(msg.payload.data(), msg.payload.size());
    }
    void flush_() override {}

private:
    std::vector<std::string> lines_;
};

std::string file_text(const fs::path& p) { return read_text(p); }

std::uint32_t crc32(const std::string& data) {
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : data) {
        c ^= b;
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

void put_be32(std::string& out, std::uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xFF);
}

// A PNG whose header claims width x height; the pixel data is a few bytes (a decompression bomb's
// shape: tiny upload, huge image).
std::string png_claiming(std::uint32_t width, std::uint32_t height) {
    std::string png("\x89PNG\r\n\x1A\n", 8);
    auto chunk = [&](const std::string& type, const std::string& data) {
        put_be32(png, static_cast<std::uint32_t>(data.size()));
        png += type + data;
        put_be32(png, crc32(type + data));
    };
    std::string ihdr;
    put_be32(ihdr, width);
    put_be32(ihdr, height);
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);
    chunk("IHDR", ihdr);
    chunk("IDAT", std::string("\x78\x9C\x03\x00\x00\x00\x00\x01", 8));
    chunk("IEND", "");
    return png;
}

json body_json(const httplib::Result& res) {
    if (!res) return json();
    return json::parse(res->body, nullptr, false);
}

// The error body every failure must have: {"error": {"code", "message"}}.
void expect_error(const httplib::Result& res, int status, const std::string& code, const std::string& says = {}) {
    ASSERT_TRUE(res) << "no response: " << httplib::to_string(res.error());
    EXPECT_EQ(res->status, status) << res->body;
    EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("application/json"));
    json j = body_json(res);
    ASSERT_TRUE(j.is_object() && j.contains("error") && j["error"].is_object()) << res->body;
    EXPECT_EQ(j["error"].value("code", ""), code) << res->body;
    EXPECT_FALSE(j["error"].value("message", "").empty()) << res->body;
    if (!says.empty()) {
        EXPECT_THAT(j["error"].value("message", ""), HasSubstr(says));
    }
}

// --- raw sockets --------------------------------------------------------------------------------

int connect_to(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n <= 0) return false;
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

struct Received {
    std::string data;
    bool closed = false;  // the peer closed (or reset) the connection
    double seconds = 0;
};

// Reads until the peer closes, `enough` says the data is complete, or the timeout passes.
Received receive(int fd, std::chrono::milliseconds timeout,
                 const std::function<bool(const std::string&)>& enough = nullptr) {
    Received r;
    const auto t0 = Clock::now();
    while (Clock::now() - t0 < timeout) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        char buf[65536];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            r.closed = true;
            break;
        }
        r.data.append(buf, static_cast<std::size_t>(n));
        if (enough && enough(r.data)) break;
    }
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return r;
}

// A complete HTTP response: headers and Content-Length bytes of body.
bool complete_response(const std::string& d) {
    auto end = d.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    std::smatch m;
    std::string head = d.substr(0, end);
    if (std::regex_search(head, m, std::regex("[Cc]ontent-[Ll]ength: *([0-9]+)")))
        return d.size() >= end + 4 + std::stoul(m[1].str());
    return true;
}

int status_of(const std::string& response) {
    std::smatch m;
    if (std::regex_search(response, m, std::regex("^HTTP/1\\.[01] ([0-9]{3})"))) return std::stoi(m[1].str());
    return -1;
}

std::string body_of(const std::string& response) {
    auto end = response.find("\r\n\r\n");
    return end == std::string::npos ? std::string() : response.substr(end + 4);
}

// --- a server in this process ---------------------------------------------------------------------

struct ServerOptions {
    std::size_t items = 0;  // the first `items` demo images are in the gallery before start
    bool load = true;       // load the gallery (ready) before start
    std::string limits = "{max_body_bytes: 20MB, queue: 64, request_timeout: 30s, workers: 2}";
    std::string transport = {};  // extra keys for the transport's section: ", token: x"
    fs::path storage = {};  // empty: a fresh temp dir
    std::string listen = "127.0.0.1:0";
};

int port_from_log(const std::vector<std::string>& lines) {
    static const std::regex listening("listening on http://[^:]+:([0-9]+)");
    for (const auto& l : lines) {
        std::smatch m;
        if (std::regex_search(l, m, listening)) return std::stoi(m[1].str());
    }
    return -1;
}

// Returns once every job submitted before the call has finished: one barrier job per worker,
// each waiting until all of them run (so no worker is still busy with an earlier job).
void quiesce(WorkerPool& pool) {
    auto state = std::make_shared<std::pair<std::mutex, std::condition_variable>>();
    auto running = std::make_shared<std::size_t>(0);
    std::vector<std::future<void>> barriers;
    for (std::size_t i = 0; i < pool.workers(); ++i)
        barriers.push_back(pool.submit([state, running, n = pool.workers()] {
            std::unique_lock lock(state->first);
            ++*running;
            state->second.notify_all();
            state->second.wait(lock, [&] { return *running >= n; });
        }));
    for (auto& b : barriers) b.wait();
}

class TestServer {
public:
    explicit TestServer(ServerOptions o) : options_(std::move(o)) {
        if (options_.storage.empty()) {
            own_dir_ = std::make_unique<TempDir>("sightline-http");
            options_.storage = own_dir_->path() / "gallery";
        }
        LoadedConfig c = load_config_file((source_dir() / "config" / "default.yaml").string());
        apply_override(c, "plugins.paths=[" + yq(plugin_dir()) + "]");
        apply_override(c, "storages.gallery.root=" + yq(options_.storage));
        apply_override(c, "storages.gallery.fsync=false");
        apply_override(c, "limits=" + options_.limits);
        apply_override(c, "logging.level=warn");
        // Short timeouts unless the test sets its own (a repeated YAML key would be ignored).
        const std::string read_timeout =
            options_.transport.find("read_timeout") == std::string::npos ? ", read_timeout: 2s" : "";
        apply_override(c, "transports=[{type: http, listen: \"" + options_.listen + "\", threads: 4" + read_timeout +
                              options_.transport + "}]");
        host_ = std::make_unique<Host>(std::move(c));
        // The transport's own logger: its lines (the port, the access log) are captured.
        log_ = spdlog::get("transport-http");
        if (!log_) throw std::runtime_error("the transport-http logger does not exist");
        capture_ = std::make_shared<CaptureSink>();
        log_->sinks().push_back(capture_);
        log_->set_level(spdlog::level::info);
        const auto images = gallery_images();
        for (std::size_t i = 0; i < options_.items && i < images.size(); ++i)
            host_->gallery().put(images[i].stem().string(), read_bytes(images[i]),
                                 read_text(fs::path(images[i]).replace_extension(".json")));
        service_ = std::make_unique<HostService>(*host_);
        if (options_.load) service_->load_gallery();
    }
    ~TestServer() { stop(); }

    void start() {
        host_->transports().at(0)->start(*service_);
        port_ = port_from_log(capture_->lines());
        if (port_ <= 0) throw std::runtime_error("the transport did not log its port:\n" + capture_->text());
    }
    void stop() {
        if (!host_) return;
        for (const auto& t : host_->transports()) t->stop(std::chrono::seconds(5));
        service_->drain(std::chrono::seconds(5));
        // HostService::drain does not wait for jobs whose caller gave up (a 504): they may still sit
        // in the worker queue, holding a pointer to the service. Let every worker finish first.
        quiesce(host_->workers());
        service_.reset();
        if (log_) {
            auto& sinks = log_->sinks();
            sinks.erase(std::remove(sinks.begin(), sinks.end(), capture_), sinks.end());
        }
        host_.reset();
    }

    std::unique_ptr<httplib::Client> client() const {
        auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
        c->set_read_timeout(60, 0);
        c->set_write_timeout(60, 0);
        return c;
    }
    int port() const { return port_; }
    Host& host() { return *host_; }
    HostService& service() { return *service_; }
    CaptureSink& log() { return *capture_; }
    const fs::path& storage() const { return options_.storage; }

private:
    ServerOptions options_;
    std::unique_ptr<TempDir> own_dir_;
    std::unique_ptr<Host> host_;
    std::unique_ptr<HostService> service_;
    std::shared_ptr<spdlog::logger> log_;
    std::shared_ptr<CaptureSink> capture_;
    int port_ = -1;
};

std::unique_ptr<TestServer> started(ServerOptions o) {
    auto s = std::make_unique<TestServer>(std::move(o));
    s->start();
    return s;
}

// Occupies the host's workers: a job that runs until released (the queue-full and timeout paths
// without racing the recognizer).
class Blocker {
public:
    explicit Blocker(WorkerPool& pool) {
        auto started = std::make_shared<std::promise<void>>();
        auto started_f = started->get_future();
        auto release = release_.get_future().share();
        done_ = pool.try_submit([started, release] {
            started->set_value();
            release.wait();
        });
        started_f_ = std::move(started_f);
    }
    void wait_running() { started_f_.wait(); }
    void release() {
        if (!released_) release_.set_value();
        released_ = true;
    }
    ~Blocker() { release(); }

private:
    std::promise<void> release_;
    std::future<void> started_f_;
    std::future<void> done_;
    bool released_ = false;
};

httplib::Headers bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

const std::string& query_item_id() {
    static const std::string id = gallery_images().at(kQueryItem).stem().string();
    return id;
}

}  // namespace

// --- health, readiness, metrics ---------------------------------------------------------------------

TEST(HttpTransport, HealthReadinessAndMetrics) {
    auto s = started({});
    auto c = s->client();
    auto res = c->Get("/healthz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(body_json(res), json({{"status", "ok"}}));
    res = c->Get("/readyz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(body_json(res)["ready"], true);

    res = c->Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("text/plain; version=0.0.4"));
    EXPECT_THAT(res->body, HasSubstr("# TYPE sightline_http_requests_total counter"));
    EXPECT_THAT(res->body, HasSubstr("sightline_http_requests_total{route=\"GET /healthz\",status=\"200\"} 1\n"));
    EXPECT_THAT(res->body, HasSubstr("sightline_http_requests_total{route=\"GET /readyz\",status=\"200\"} 1\n"));
    EXPECT_THAT(res->body, HasSubstr("sightline_http_request_seconds_count{route=\"GET /healthz\"} 1\n"));
    EXPECT_THAT(res->body, HasSubstr("# TYPE sightline_http_request_seconds histogram"));
    // The host's own metrics come through too.
    EXPECT_THAT(res->body, HasSubstr("sightline_queue_depth"));
}

TEST(HttpTransport, NotReadyUntilTheGalleryIsLoaded) {
    ServerOptions o;
    o.items = 2;
    o.load = false;
    auto s = started(o);
    auto c = s->client();
    auto res = c->Get("/readyz");
    expect_error(res, 503, "unavailable", "loading");
    EXPECT_EQ(res->get_header_value("Retry-After"), "1");
    res = c->Get("/healthz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << "healthz answers while the gallery loads";
    const std::string photo = jpeg_string(easy_photo(gallery_images()[0]));
    res = c->Post("/v1/recognize", photo, "image/jpeg");
    expect_error(res, 503, "unavailable", "loading");

    s->service().load_gallery();
    res = c->Get("/readyz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    res = c->Post("/v1/recognize", photo, "image/jpeg");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
}

// --- recognition ----------------------------------------------------------------------------------

TEST(HttpTransport, RecognizesARawImageBody) {
    ServerOptions o;
    o.items = kItems;
    auto s = started(o);
    auto c = s->client();
    auto res = c->Post("/v1/recognize", jpeg_string(easy_photo(gallery_images()[kQueryItem])), "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("application/json"));
    json j = body_json(res);
    ASSERT_TRUE(j.is_object()) << res->body;
    ASSERT_TRUE(j["request_id"].is_string());
    EXPECT_FALSE(j["request_id"].get<std::string>().empty());
    EXPECT_EQ(res->get_header_value("X-Request-Id"), j["request_id"].get<std::string>());
    EXPECT_EQ(j["variant"], "surf");
    EXPECT_FALSE(j.contains("error"));
    ASSERT_TRUE(j["matches"].is_array());
    ASSERT_FALSE(j["matches"].empty()) << res->body;
    const json& m = j["matches"][0];
    EXPECT_EQ(m["id"], query_item_id());
    EXPECT_GT(m["score"].get<double>(), 0.0);
    EXPECT_LE(m["score"].get<double>(), 1.0);
    EXPECT_GE(m["inliers"].get<int>(), 15);
    ASSERT_TRUE(m["polygon"].is_array());
    ASSERT_EQ(m["polygon"].size(), 4u);
    for (const auto& p : m["polygon"]) {
        ASSERT_TRUE(p.is_array() && p.size() == 2u) << p;
        EXPECT_TRUE(p[0].is_number() && p[1].is_number());
    }
    ASSERT_TRUE(m["metadata"].is_object());
    EXPECT_EQ(m["metadata"]["id"], query_item_id());
    for (const char* stage : {"decode", "extract", "search", "verify", "total"})
        EXPECT_TRUE(j["timings_ms"].contains(stage)) << stage;
}

TEST(HttpTransport, RecognizesMultipartAndCarriesClientFields) {
    ServerOptions o;
    o.items = kItems;
    auto s = started(o);
    auto c = s->client();
    const std::string photo = jpeg_string(easy_photo(gallery_images()[kQueryItem]));

    // pos_x/pos_y in the middle of the photo (inside the item): the item ranks first.
    httplib::MultipartFormDataItems form{{"image", photo, "photo.jpg", "image/jpeg"},
                                         {"pos_x", "512", "", ""},
                                         {"pos_y", "384", "", ""},
                                         {"client_id", "tester", "", ""}};
    auto res = c->Post("/v1/recognize", {{"X-Request-Id", "my-request.1"}}, form);
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json j = body_json(res);
    EXPECT_EQ(j["request_id"], "my-request.1");
    ASSERT_FALSE(j["matches"].empty());
    EXPECT_EQ(j["matches"][0]["id"], query_item_id());

    // Client fields reach the pipeline: a pos_x that is not a number is the pipeline's 400.
    httplib::MultipartFormDataItems bad{{"image", photo, "photo.jpg", "image/jpeg"}, {"pos_x", "left", "", ""},
                                        {"pos_y", "10", "", ""}};
    res = c->Post("/v1/recognize", bad);
    expect_error(res, 400, "invalid_argument", "pos_x");
    EXPECT_TRUE(body_json(res).contains("request_id"));

    // The query string carries client fields of a raw body too.
    res = c->Post("/v1/recognize?pos_x=left&pos_y=1", photo, "image/jpeg");
    expect_error(res, 400, "invalid_argument", "pos_x");

    // An image part without a content type is sniffed.
    httplib::MultipartFormDataItems untyped{{"image", photo, "", ""}};
    res = c->Post("/v1/recognize", untyped);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;

    res = c->Post("/v1/recognize", {{"X-Request-Id", "bad id!"}}, photo, "image/jpeg");
    expect_error(res, 400, "invalid_argument", "X-Request-Id");
}

TEST(HttpTransport, BadImagesAreClientErrorsAndTheServerKeepsServing) {
    ServerOptions o;
    o.items = 2;
    auto s = started(o);
    auto c = s->client();
    const std::string photo = jpeg_string(easy_photo(gallery_images()[1]));
    std::string random(5000, '\0');
    std::mt19937 rng(5);
    for (auto& ch : random) ch = static_cast<char>(rng());
    random[0] = 0x00;

    expect_error(c->Post("/v1/recognize", "", "image/jpeg"), 400, "invalid_argument", "empty");
    expect_error(c->Post("/v1/recognize", photo.substr(0, photo.size() / 2), "image/jpeg"), 400, "invalid_argument",
                 "truncated");
    expect_error(c->Post("/v1/recognize", random, "application/octet-stream"), 400, "invalid_argument",
                 "not a supported image");
    // A 20000x20000 PNG header (a decompression bomb): refused from the header, never decoded.
    const auto t0 = Clock::now();
    auto res = c->Post("/v1/recognize", png_claiming(20000, 20000), "image/png");
    expect_error(res, 413, "resource_exhausted", "max_pixels");
    EXPECT_THAT(body_json(res)["error"]["message"].get<std::string>(), HasSubstr("20000x20000"));
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 5.0);
    // Multipart: no image field, two image fields, an empty image.
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"pos_x", "1", "", ""}}), 400,
                 "invalid_argument", "no `image` field");
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"image", photo, "a.jpg", "image/jpeg"},
                                                                          {"image", photo, "b.jpg", "image/jpeg"}}),
                 400, "invalid_argument", "more than one");
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"image", "", "a.jpg", "image/jpeg"}}), 400,
                 "invalid_argument", "empty");
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"image", photo, "a.jpg", "image/jpeg"},
                                                                          {"bad name!", "1", "", ""}}),
                 400, "invalid_argument", "not valid");
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"image", photo, "a.jpg", "image/jpeg"},
                                                                          {"note", "\xC3\x28", "", ""}}),
                 400, "invalid_argument", "UTF-8");

    res = c->Post("/v1/recognize", photo, "image/jpeg");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << "the server keeps serving: " << res->body;
}

TEST(HttpTransport, UnsupportedContentTypesAre415) {
    auto s = started({.items = 1});
    auto c = s->client();
    const std::string photo = jpeg_string(easy_photo(gallery_images()[0]));
    expect_error(c->Post("/v1/recognize", photo, "text/plain"), 415, "unsupported", "text/plain");
    expect_error(c->Post("/v1/recognize", R"({"image": "..."})", "application/json"), 415, "unsupported",
                 "application/json");
    expect_error(c->Post("/v1/recognize", "a=b", "application/x-www-form-urlencoded"), 415, "unsupported",
                 "Content-Type: image/jpeg");
    expect_error(c->Post("/v1/recognize", photo, "image/gif"), 415, "unsupported");
    expect_error(c->Post("/v1/recognize", photo, "not a type"), 415, "unsupported");
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"image", photo, "a.txt", "text/plain"}}), 415,
                 "unsupported", "`image` field");
    expect_error(c->Put("/v1/gallery/x", photo, "text/html"), 415, "unsupported");
    // No Content-Type at all (raw socket: the client library always sends one).
    int fd = connect_to(s->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd"));
    Received r = receive(fd, std::chrono::seconds(10), complete_response);
    ::close(fd);
    EXPECT_EQ(status_of(r.data), 415) << r.data;
    EXPECT_THAT(body_of(r.data), HasSubstr("no Content-Type"));
    // Image types are matched without case and with parameters.
    auto res = c->Post("/v1/recognize", photo, "Image/JPEG; charset=binary");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
}

TEST(HttpTransport, BodiesOverMaxBodyBytesAre413) {
    auto s = started({.limits = "{max_body_bytes: 100KB, workers: 1, request_timeout: 30s}"});
    auto c = s->client();
    const std::string big(300'000, 'x');
    // Content-Length over the limit (plus the multipart allowance): refused by the server library.
    expect_error(c->Post("/v1/recognize", std::string(1'300'000, 'x'), "image/jpeg"), 413, "resource_exhausted",
                 "max_body_bytes");
    // Over max_body_bytes but inside the multipart allowance: refused while reading.
    expect_error(c->Post("/v1/recognize", big, "image/jpeg"), 413, "resource_exhausted", "max_body_bytes");
    expect_error(c->Post("/v1/recognize", httplib::MultipartFormDataItems{{"image", big, "a.jpg", "image/jpeg"}}), 413,
                 "resource_exhausted", "max_body_bytes");
    expect_error(c->Put("/v1/gallery/big", big, "image/jpeg"), 413, "resource_exhausted", "max_body_bytes");
    // Chunked, so no Content-Length to check up front: counted while reading.
    auto chunked = c->Post(
        "/v1/recognize",
        [&](std::size_t offset, httplib::DataSink& sink) {
            if (offset >= big.size()) {
                sink.done();
                return true;
            }
            const std::size_t n = std::min<std::size_t>(16384, big.size() - offset);
            return sink.write(big.data() + offset, n);
        },
        "image/jpeg");
    expect_error(chunked, 413, "resource_exhausted", "max_body_bytes");
    // Expect: 100-continue with a huge Content-Length: refused before the body is sent.
    int fd = connect_to(s->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                             "Content-Length: 900000000\r\nExpect: 100-continue\r\n\r\n"));
    Received r = receive(fd, std::chrono::seconds(10), complete_response);
    ::close(fd);
    EXPECT_EQ(status_of(r.data), 413) << r.data;

    auto res = s->client()->Get("/healthz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
}

TEST(HttpTransport, SlowClientsAreCutOffAndOthersStillServed) {
    auto s = started({});  // read_timeout: 2s
    // Headers never finished, and a body that stops half way.
    int slow_headers = connect_to(s->port());
    int slow_body = connect_to(s->port());
    ASSERT_GE(slow_headers, 0);
    ASSERT_GE(slow_body, 0);
    ASSERT_TRUE(send_all(slow_headers, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Ty"));
    ASSERT_TRUE(send_all(slow_body, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                                    "Content-Length: 1000\r\n\r\n0123456789"));
    // Meanwhile another client is served at once.
    auto res = s->client()->Get("/healthz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);

    auto a = std::async(std::launch::async, [&] { return receive(slow_headers, std::chrono::seconds(15)); });
    Received rb = receive(slow_body, std::chrono::seconds(15));
    Received ra = a.get();
    ::close(slow_headers);
    ::close(slow_body);
    EXPECT_TRUE(ra.closed) << "the server did not close a connection whose headers stopped";
    EXPECT_TRUE(rb.closed) << "the server did not close a connection whose body stopped";
    EXPECT_LT(ra.seconds, 8.0);
    EXPECT_LT(rb.seconds, 8.0);
    EXPECT_GT(rb.seconds, 1.0) << "cut off before read_timeout";
    if (!rb.data.empty()) {
        EXPECT_EQ(status_of(rb.data), 400) << rb.data;
    }

    res = s->client()->Get("/healthz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
}

// --- queue-and-poll ---------------------------------------------------------------------------------

TEST(HttpTransport, QueuedRequestsArePolled) {
    ServerOptions o;
    o.items = kItems;
    auto s = started(o);
    auto c = s->client();
    auto res = c->Post("/v1/requests", jpeg_string(easy_photo(gallery_images()[kQueryItem])), "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 202) << res->body;
    const std::string id = body_json(res).value("request_id", "");
    ASSERT_FALSE(id.empty());
    EXPECT_EQ(res->get_header_value("Location"), "/v1/requests/" + id);

    json status;
    const auto until = Clock::now() + std::chrono::seconds(60);
    do {
        res = c->Get(("/v1/requests/" + id).c_str());
        ASSERT_TRUE(res);
        ASSERT_EQ(res->status, 200) << res->body;
        status = body_json(res);
        ASSERT_TRUE(status["state"] == "pending" || status["state"] == "done") << res->body;
        if (status["state"] == "done") break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < until);
    ASSERT_EQ(status["state"], "done");
    EXPECT_EQ(status["request_id"], id);
    EXPECT_EQ(status["result"]["request_id"], id);
    ASSERT_FALSE(status["result"]["matches"].empty());
    EXPECT_EQ(status["result"]["matches"][0]["id"], query_item_id());

    expect_error(c->Get("/v1/requests/no-such-request"), 404, "not_found");
    expect_error(c->Get("/v1/requests/bad$id"), 400, "invalid_argument");
    expect_error(c->Post("/v1/requests", "", "image/jpeg"), 400, "invalid_argument", "empty");
    // A request id may be chosen, but only once.
    res = c->Post("/v1/requests", {{"X-Request-Id", "mine-1"}}, png_claiming(100, 100), "image/png");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 202);
    expect_error(c->Post("/v1/requests", {{"X-Request-Id", "mine-1"}}, png_claiming(100, 100), "image/png"), 409,
                 "already_exists");
}

// --- limits: full queue, deadline -----------------------------------------------------------------

TEST(HttpTransport, AFullQueueIs503WithRetryAfter) {
    ServerOptions o;
    o.items = 2;
    o.limits = "{workers: 1, queue: 1, request_timeout: 30s}";
    auto s = started(o);
    auto c = s->client();
    const std::string photo = jpeg_string(easy_photo(gallery_images()[1]));
    // The only worker is busy; the queue has room for one.
    Blocker busy(s->host().workers());
    busy.wait_running();
    auto res = c->Post("/v1/requests", photo, "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 202) << res->body;
    const std::string queued = body_json(res)["request_id"];
    // Now it is full: both endpoints refuse at once.
    for (const char* path : {"/v1/recognize", "/v1/requests"}) {
        res = c->Post(path, photo, "image/jpeg");
        expect_error(res, 503, "resource_exhausted", "queue");
        EXPECT_EQ(res->get_header_value("Retry-After"), "1") << path;
    }
    // Concurrent clients: every one is answered, none with anything but 503.
    std::vector<std::future<int>> burst;
    for (int i = 0; i < 4; ++i)
        burst.push_back(std::async(std::launch::async, [&] {
            auto r = s->client()->Post("/v1/recognize", photo, "image/jpeg");
            return r ? r->status : -1;
        }));
    for (auto& f : burst) EXPECT_EQ(f.get(), 503);

    busy.release();
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < until && body_json(c->Get(("/v1/requests/" + queued).c_str()))["state"] != "done")
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(body_json(c->Get(("/v1/requests/" + queued).c_str()))["state"], "done");
    res = c->Post("/v1/recognize", photo, "image/jpeg");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    auto metrics = c->Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_THAT(metrics->body,
                HasSubstr("sightline_http_requests_total{route=\"POST /v1/recognize\",status=\"503\"} 5\n"));
}

TEST(HttpTransport, PastTheRequestTimeoutIs504) {
    ServerOptions o;
    o.items = 1;
    o.limits = "{workers: 1, queue: 4, request_timeout: 1ms}";
    auto s = started(o);
    auto c = s->client();
    Blocker busy(s->host().workers());
    busy.wait_running();
    auto res = c->Post("/v1/recognize", jpeg_string(easy_photo(gallery_images()[0])), "image/jpeg");
    expect_error(res, 504, "deadline_exceeded");
    busy.release();
    // Even with a free worker, 1 ms is too short for a real photo.
    res = c->Post("/v1/recognize", jpeg_string(easy_photo(gallery_images()[0])), "image/jpeg");
    expect_error(res, 504, "deadline_exceeded");
}

// --- gallery ----------------------------------------------------------------------------------------

TEST(HttpTransport, GalleryPutGetListDelete) {
    ServerOptions o;
    o.items = 3;
    o.transport = ", max_page: 3";
    auto s = started(o);
    auto c = s->client();
    const auto images = gallery_images();
    const std::string image = file_text(images[kQueryItem]);
    const std::string id = "poster-1";

    auto res = c->Put(("/v1/gallery/" + id).c_str(), image, "image/jpeg");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 201) << res->body;
    EXPECT_EQ(body_json(res), json({{"id", id}, {"created", true}}));
    EXPECT_EQ(res->get_header_value("Location"), "/v1/gallery/" + id);

    res = c->Get(("/v1/gallery/" + id).c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Type"), "image/jpeg");
    EXPECT_EQ(res->body, image);
    res = c->Get(("/v1/gallery/" + id + "/metadata").c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(body_json(res), json::object());

    // Replace it with multipart + metadata: 200, and the metadata is kept.
    const json meta{{"title", "Hills at dusk"}, {"campaign", {{"id", 7}, {"tags", {"a", "b"}}}}};
    res = c->Put(("/v1/gallery/" + id).c_str(),
                 httplib::MultipartFormDataItems{{"image", image, "p.jpg", "image/jpeg"},
                                                 {"metadata", meta.dump(), "", "application/json"}});
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    EXPECT_EQ(body_json(res)["created"], false);
    res = c->Get(("/v1/gallery/" + id + "/metadata").c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(body_json(res), meta);

    // The new item is recognised, with its metadata.
    res = c->Post("/v1/recognize", jpeg_string(easy_photo(images[kQueryItem])), "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json r = body_json(res);
    ASSERT_FALSE(r["matches"].empty());
    EXPECT_EQ(r["matches"][0]["id"], id);
    EXPECT_EQ(r["matches"][0]["metadata"], meta);

    // Listing: 4 items, pages capped at max_page (3).
    res = c->Get("/v1/gallery");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200);
    json page = body_json(res);
    EXPECT_EQ(page["total"], 4);
    ASSERT_EQ(page["items"].size(), 3u);
    ASSERT_TRUE(page["next_after"].is_string());
    std::vector<std::string> all = page["items"];
    res = c->Get(("/v1/gallery?limit=100&after=" + page["next_after"].get<std::string>()).c_str());
    ASSERT_TRUE(res);
    json page2 = body_json(res);
    ASSERT_EQ(page2["items"].size(), 1u);
    EXPECT_TRUE(page2["next_after"].is_null());
    all.push_back(page2["items"][0]);
    EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
    EXPECT_NE(std::find(all.begin(), all.end(), id), all.end());
    res = c->Get("/v1/gallery?limit=1");
    EXPECT_EQ(body_json(res)["items"].size(), 1u);
    expect_error(c->Get("/v1/gallery?limit=0"), 400, "invalid_argument", "limit");
    expect_error(c->Get("/v1/gallery?limit=ten"), 400, "invalid_argument", "limit");
    expect_error(c->Get("/v1/gallery?after=..x"), 400, "invalid_argument", "after");

    res = c->Delete(("/v1/gallery/" + id).c_str());
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 204);
    EXPECT_TRUE(res->body.empty());
    expect_error(c->Get(("/v1/gallery/" + id).c_str()), 404, "not_found");
    expect_error(c->Get(("/v1/gallery/" + id + "/metadata").c_str()), 404, "not_found");
    expect_error(c->Delete(("/v1/gallery/" + id).c_str()), 404, "not_found");
    EXPECT_EQ(body_json(c->Get("/v1/gallery"))["total"], 3);
}

TEST(HttpTransport, BadGalleryUploadsAre400AndStoreNothing) {
    auto s = started({});
    auto c = s->client();
    const std::string image = file_text(gallery_images()[0]);
    // Malformed ids.
    expect_error(c->Put("/v1/gallery/.hidden", image, "image/jpeg"), 400, "invalid_argument", "invalid gallery item id");
    expect_error(c->Put("/v1/gallery/bad id", image, "image/jpeg"), 400, "invalid_argument", "' '");
    expect_error(c->Put(("/v1/gallery/" + std::string(129, 'a')).c_str(), image, "image/jpeg"), 400,
                 "invalid_argument", "128");
    expect_error(c->Get("/v1/gallery/a$b"), 400, "invalid_argument", "invalid gallery item id");
    auto raw_paths = s->client();
    raw_paths->set_url_encode(false);
    expect_error(raw_paths->Delete("/v1/gallery/a%00b"), 400, "invalid_argument");
    expect_error(raw_paths->Get("/v1/gallery/%2Ehidden"), 400, "invalid_argument", "starts with '.'");
    // Metadata that is not a JSON object.
    auto put_meta = [&](const std::string& meta) {
        return c->Put("/v1/gallery/item1", httplib::MultipartFormDataItems{{"image", image, "a.jpg", "image/jpeg"},
                                                                          {"metadata", meta, "", "application/json"}});
    };
    expect_error(put_meta("this is not json"), 400, "invalid_argument", "metadata is not JSON");
    expect_error(put_meta("{\"title\": \"unterminated"), 400, "invalid_argument", "metadata is not JSON");
    expect_error(put_meta("[1, 2]"), 400, "invalid_argument", "JSON object");
    expect_error(put_meta(std::string(100, '[') + std::string(100, ']')), 400, "invalid_argument", "nests deeper");
    expect_error(put_meta(""), 400, "invalid_argument", "metadata is empty");
    // Other broken uploads.
    expect_error(c->Put("/v1/gallery/item1", httplib::MultipartFormDataItems{{"metadata", "{}", "", ""}}), 400,
                 "invalid_argument", "no `image` field");
    expect_error(c->Put("/v1/gallery/item1", httplib::MultipartFormDataItems{{"image", image, "a.jpg", "image/jpeg"},
                                                                           {"colour", "red", "", ""}}),
                 400, "invalid_argument", "unknown field");
    expect_error(c->Put("/v1/gallery/item1", image.substr(0, image.size() / 3), "image/jpeg"), 400, "invalid_argument",
                 "truncated");
    expect_error(c->Put("/v1/gallery/item1", png_claiming(20000, 20000), "image/png"), 413, "resource_exhausted",
                 "max_pixels");
    expect_error(c->Get("/v1/gallery/item1"), 404, "not_found");
    EXPECT_EQ(body_json(c->Get("/v1/gallery"))["total"], 0);
}

TEST(HttpTransport, GalleryChangesNeedTheBearerToken) {
    ServerOptions o;
    o.transport = std::string(", token: \"") + kToken + "\"";
    auto s = started(o);
    auto c = s->client();
    const std::string image = file_text(gallery_images()[0]);

    auto res = c->Put("/v1/gallery/item1", image, "image/jpeg");
    expect_error(res, 401, "unauthenticated", "Authorization: Bearer");
    EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer realm=\"sightline\"");
    res = c->Put("/v1/gallery/item1", bearer("wrong-token"), image, "image/jpeg");
    expect_error(res, 401, "unauthenticated", "not valid");
    EXPECT_THAT(res->get_header_value("WWW-Authenticate"), HasSubstr("error=\"invalid_token\""));
    res = c->Put("/v1/gallery/item1", bearer(std::string(kToken) + "x"), image, "image/jpeg");
    expect_error(res, 401, "unauthenticated");
    res = c->Put("/v1/gallery/item1", {{"Authorization", std::string("Basic ") + kToken}}, image, "image/jpeg");
    expect_error(res, 401, "unauthenticated");
    expect_error(c->Get("/v1/gallery/item1"), 404, "not_found");  // nothing was stored

    res = c->Put("/v1/gallery/item1", bearer(kToken), image, "image/jpeg");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 201) << res->body;
    res = c->Get("/v1/gallery/item1");  // reading needs no token
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(c->Get("/v1/gallery")->status, 200);

    expect_error(c->Delete("/v1/gallery/item1"), 401, "unauthenticated");
    expect_error(c->Delete("/v1/gallery/item1", bearer("nope")), 401, "unauthenticated");
    res = c->Delete("/v1/gallery/item1", bearer(kToken));
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 204);

    // With Expect: 100-continue a refused upload is answered before its body is sent.
    int fd = connect_to(s->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "PUT /v1/gallery/item2 HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                             "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n"));
    Received r = receive(fd, std::chrono::seconds(10), complete_response);
    ::close(fd);
    EXPECT_EQ(status_of(r.data), 401) << r.data;

    // The token never reaches the log.
    EXPECT_THAT(s->log().text(), Not(HasSubstr(kToken)));
}

TEST(HttpTransport, UnknownRoutesAndMethods) {
    auto s = started({});
    auto c = s->client();
    expect_error(c->Get("/nope"), 404, "not_found", "no such endpoint");
    auto res = c->Get("/v1/recognize");
    expect_error(res, 405, "unsupported");
    EXPECT_EQ(res->get_header_value("Allow"), "POST");
    res = c->Delete("/v1/gallery");
    expect_error(res, 405, "unsupported");
    EXPECT_EQ(res->get_header_value("Allow"), "GET");
    res = c->Post("/v1/gallery/x", "x", "image/jpeg");
    expect_error(res, 405, "unsupported");
    EXPECT_EQ(res->get_header_value("Allow"), "GET, PUT, DELETE");
    // A malformed request line.
    int fd = connect_to(s->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "THIS IS NOT HTTP\r\n\r\n"));
    Received r = receive(fd, std::chrono::seconds(10), complete_response);
    ::close(fd);
    EXPECT_EQ(status_of(r.data), 400) << r.data;
    auto metrics = c->Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_THAT(metrics->body, HasSubstr("sightline_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n"));
}

TEST(HttpTransport, AccessLogLines) {
    ServerOptions o;
    o.items = 1;
    o.transport = std::string(", token: \"") + kToken + "\"";
    auto s = started(o);
    auto c = s->client();
    const std::string photo = jpeg_string(easy_photo(gallery_images()[0]));
    auto res = c->Post("/v1/recognize", {{"X-Request-Id", "log-me-1"}}, photo, "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200);
    res = c->Put("/v1/gallery/z1", bearer(kToken), file_text(gallery_images()[0]), "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 201);
    c->Get("/nope");

    const std::string log = s->log().text();
    EXPECT_THAT(log, testing::ContainsRegex("POST /v1/recognize 200 " + std::to_string(photo.size()) +
                                            "B [0-9]+\\.[0-9]ms id=log-me-1"));
    EXPECT_THAT(log, testing::ContainsRegex("PUT /v1/gallery/z1 201 [0-9]+B [0-9.]+ms id=-"));
    EXPECT_THAT(log, testing::ContainsRegex("GET /nope 404 0B [0-9.]+ms"));
    EXPECT_THAT(log, Not(HasSubstr(kToken)));
}

TEST(HttpTransport, AccessLogCanBeTurnedOff) {
    auto s = started({.transport = ", access_log: false"});
    auto res = s->client()->Get("/healthz");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200);
    for (const auto& line : s->log().lines()) EXPECT_THAT(line, Not(HasSubstr("GET /healthz")));
}

// --- hostile clients (issue 22) -----------------------------------------------------------------------

namespace {

// One raw exchange on a fresh connection: what came back until the server closed or `timeout`.
Received raw_exchange(int port, const std::string& request, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    int fd = connect_to(port);
    if (fd < 0) return {};
    send_all(fd, request);
    Received r = receive(fd, timeout, complete_response);
    ::close(fd);
    return r;
}

void expect_json_error_response(const std::string& response, int status) {
    EXPECT_EQ(status_of(response), status) << response;
    json j = json::parse(body_of(response), nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("error")) << response;
    EXPECT_FALSE(j["error"].value("message", "").empty()) << response;
}

}  // namespace

// Before: the 404/405 body quoted the decoded path, building the JSON threw on invalid UTF-8 outside
// any catch, and the process died (terminate, type_error.316).
TEST(HttpTransport, InvalidUtf8InThePathIsAnErrorAnswerNotACrash) {
    auto s = started({.transport = std::string(", token: \"") + kToken + "\""});
    for (const char* line : {"GET /nosuch%FF HTTP/1.1", "GET /%C3 HTTP/1.1", "PATCH /v1/gallery/%FF HTTP/1.1",
                             "GET /v1/gallery/%FF%FE HTTP/1.1", "DELETE /v1/gallery/%C3%28 HTTP/1.1"}) {
        SCOPED_TRACE(line);
        Received r = raw_exchange(s->port(), std::string(line) + "\r\nHost: t\r\n\r\n");
        const int status = status_of(r.data);
        EXPECT_TRUE(status == 400 || status == 401 || status == 404 || status == 405) << r.data;
        expect_json_error_response(r.data, status);
        auto res = s->client()->Get("/healthz");
        ASSERT_TRUE(res) << "the server died";
        EXPECT_EQ(res->status, 200);
    }
}

// Before: the parser's message quoted the raw bytes and building the error body failed: 500.
TEST(HttpTransport, InvalidUtf8InMetadataIs400) {
    auto s = started({});
    const std::string image = file_text(gallery_images()[0]);
    auto res = s->client()->Put("/v1/gallery/item1",
                                httplib::MultipartFormDataItems{{"image", image, "a.jpg", "image/jpeg"},
                                                                {"metadata", "{\"t\": \"\xFF\xFE\"}", "", "application/json"}});
    expect_error(res, 400, "invalid_argument", "metadata is not JSON");
    expect_error(s->client()->Get("/v1/gallery/item1"), 404, "not_found");
}

// Before: after an early 401 or 413 the connection stayed open and the body was parsed as the next
// request (a GET hidden in the body was answered 200).
TEST(HttpTransport, AfterAnEarlyAnswerTheBodyIsNeverParsed) {
    auto s = started({.limits = "{max_body_bytes: 100KB, workers: 1, request_timeout: 30s}",
                      .transport = std::string(", token: \"") + kToken + "\""});
    const std::string smuggled = "GET /v1/gallery?limit=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    struct Case {
        std::string head;
        int status;
        bool body_with_head = false;  // a small body sent at once is read by its length and dropped
    };
    const std::vector<Case> cases{
        {"PUT /v1/gallery/x HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nExpect: 100-continue\r\nContent-Length: " +
             std::to_string(smuggled.size()) + "\r\n\r\n",
         401},
        {"PUT /v1/gallery/x HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: " +
             std::to_string(smuggled.size()) + "\r\n\r\n",
         401, true},
        {"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nExpect: 100-continue\r\n"
         "Content-Length: 900000\r\n\r\n",
         413},
        {"POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: 900000\r\n\r\n", 413},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.head);
        int fd = connect_to(s->port());
        ASSERT_GE(fd, 0);
        if (c.body_with_head) {
            ASSERT_TRUE(send_all(fd, c.head + smuggled));
            Received r = receive(fd, std::chrono::seconds(3));
            ::close(fd);
            EXPECT_EQ(status_of(r.data), c.status) << r.data;
            EXPECT_THAT(r.data, Not(HasSubstr("\"items\""))) << "the body was parsed as a request";
            EXPECT_EQ(r.data.find("HTTP/1.1 200"), std::string::npos) << r.data;
            continue;
        }
        ASSERT_TRUE(send_all(fd, c.head));
        Received first = receive(fd, std::chrono::seconds(10), complete_response);
        EXPECT_EQ(status_of(first.data), c.status) << first.data;
        // The client sends its body anyway: a request hidden in it.
        send_all(fd, smuggled);
        Received rest = receive(fd, std::chrono::seconds(10));
        ::close(fd);
        EXPECT_THAT(first.data + rest.data, Not(HasSubstr("\"items\""))) << "the body was parsed as a request";
        EXPECT_EQ(first.data.find("HTTP/1.1 200"), std::string::npos);
        EXPECT_EQ(rest.data.find("HTTP/1.1 200"), std::string::npos) << rest.data;
        EXPECT_TRUE(rest.closed) << "the connection stayed open after an early answer";
        EXPECT_THAT(first.data, HasSubstr("Connection: close"));
    }
}

// Before: a 100 MB body was read whole (13-17 s) before the 413.
TEST(HttpTransport, AnOversizedContentLengthIsAnsweredBeforeTheBody) {
    auto s = started({.limits = "{max_body_bytes: 1MB, workers: 1, request_timeout: 30s}"});
    int fd = connect_to(s->port());
    ASSERT_GE(fd, 0);
    constexpr std::size_t kDeclared = 100'000'000;
    ASSERT_TRUE(send_all(fd, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                             "Content-Length: " + std::to_string(kDeclared) + "\r\n\r\n"));
    // The client sends its body as fast as it can while the answer is awaited.
    std::atomic<std::size_t> sent{0};
    std::atomic<bool> answered{false};
    std::thread sender([&] {
        const std::string chunk(65536, 'x');
        while (sent < kDeclared && !answered && send_all(fd, chunk)) sent += chunk.size();
    });
    Received r = receive(fd, std::chrono::seconds(60), complete_response);
    const std::size_t sent_when_answered = sent;
    answered = true;
    ::shutdown(fd, SHUT_RDWR);
    sender.join();
    ::close(fd);
    expect_json_error_response(r.data, 413);
    EXPECT_THAT(body_of(r.data), HasSubstr("max_body_bytes"));
    EXPECT_LT(sent_when_answered, kDeclared / 2) << "the answer waited for the body";
}

// Before: one header byte per second on 8 connections (the default thread count) locked every other
// client out, since cpp-httplib held a thread per connection until it closed.
TEST(HttpTransport, FiftySlowlorisConnectionsDoNotLockOthersOut) {
    ServerOptions o;
    o.items = kItems;
    o.transport = ", read_timeout: 60s, idle_timeout: 60s";
    auto s = started(o);
    const std::string photo = jpeg_string(easy_photo(gallery_images()[kQueryItem]));
    // The normal time first.
    auto t0 = Clock::now();
    auto res = s->client()->Post("/v1/recognize", photo, "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    const double normal = std::chrono::duration<double>(Clock::now() - t0).count();

    // 50 slowloris connections (a header byte a second) and 10 idle keep-alive ones.
    std::vector<int> slow;
    for (int i = 0; i < 50; ++i) {
        int fd = connect_to(s->port());
        ASSERT_GE(fd, 0);
        ASSERT_TRUE(send_all(fd, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\n"));
        slow.push_back(fd);
    }
    for (int i = 0; i < 10; ++i) {
        int fd = connect_to(s->port());
        ASSERT_GE(fd, 0);
        ASSERT_TRUE(send_all(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"));
        EXPECT_EQ(status_of(receive(fd, std::chrono::seconds(5), complete_response).data), 200);
        slow.push_back(fd);
    }
    std::atomic<bool> done{false};
    std::thread dribble([&] {
        for (int tick = 0; tick < 30 && !done; ++tick) {
            for (std::size_t i = 0; i < 50; ++i) send_all(slow[i], "X");
            std::this_thread::sleep_for(std::chrono::seconds(1));
        }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));

    auto c = s->client();
    c->set_read_timeout(20, 0);
    t0 = Clock::now();
    res = c->Get("/healthz");
    const double health = std::chrono::duration<double>(Clock::now() - t0).count();
    ASSERT_TRUE(res) << "healthz did not answer while slow clients were connected";
    EXPECT_EQ(res->status, 200);
    EXPECT_LT(health, 2.0);
    t0 = Clock::now();
    res = c->Post("/v1/recognize", photo, "image/jpeg");
    const double recognize = std::chrono::duration<double>(Clock::now() - t0).count();
    ASSERT_TRUE(res) << "recognize did not answer while slow clients were connected";
    EXPECT_EQ(res->status, 200) << res->body;
    // The slow clients cost no handler thread: the same order of time as without them.
    EXPECT_LT(recognize, 3 * normal + 2.0) << "normal " << normal << " s";
    done = true;
    dribble.join();
    // They are all still open (none was refused or served): the server holds them without threads.
    auto metrics = c->Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_THAT(metrics->body, testing::ContainsRegex("sightline_http_open_connections 6[0-9]"));
    for (int fd : slow) ::close(fd);
}

TEST(HttpTransport, ConnectionLimitsAnswer503AndIdleConnectionsClose) {
    auto s = started({.transport = ", max_connections_per_client: 3, idle_timeout: 1s"});
    std::vector<int> held;
    for (int i = 0; i < 3; ++i) {
        int fd = connect_to(s->port());
        ASSERT_GE(fd, 0);
        held.push_back(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Received refused = raw_exchange(s->port(), "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_json_error_response(refused.data, 503);
    EXPECT_THAT(body_of(refused.data), HasSubstr("max_connections_per_client"));
    // Idle connections are closed after idle_timeout, which frees the slots.
    for (int fd : held) {
        Received r = receive(fd, std::chrono::seconds(5));
        EXPECT_TRUE(r.closed);
        EXPECT_LT(r.seconds, 3.0);
        ::close(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto res = s->client()->Get("/healthz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 200);
    auto metrics = s->client()->Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_THAT(metrics->body,
                HasSubstr("sightline_http_connections_refused_total{limit=\"max_connections_per_client\"} 1\n"));
    EXPECT_THAT(metrics->body, HasSubstr("sightline_http_timeouts_total{phase=\"idle\"} 3\n"));
}

// Before: a %0A in the path wrote a fake line into the access log; NUL and a right-to-left
// override were logged raw.
TEST(HttpTransport, ClientTextCannotForgeLogLines) {
    auto s = started({});
    auto c = s->client();
    c->set_url_encode(false);
    c->Get("/x%0A%5B2026-12-08%2001:05:00.000%5D%20%5Btransport-http%5D%20%5Binfo%5D%20DELETE%20/v1/gallery/beach0%20204");
    c->Get("/y%00z%E2%80%AEgpj.exe");
    raw_exchange(s->port(), "GET /raw\x01\x7F HTTP/1.1\r\nHost: t\r\n\r\n");
    bool saw_escaped = false;
    for (const auto& line : s->log().lines()) {
        EXPECT_EQ(line.find('\n'), std::string::npos) << line;
        EXPECT_EQ(line.find('\r'), std::string::npos) << line;
        EXPECT_EQ(line.find('\0'), std::string::npos) << line;
        EXPECT_EQ(line.find("\xE2\x80\xAE"), std::string::npos) << line;
        for (unsigned char ch : line) EXPECT_TRUE(ch >= 32 && ch < 127) << line;
        if (line.find("%0A%5B2026") != std::string::npos) saw_escaped = true;
    }
    EXPECT_TRUE(saw_escaped) << s->log().text();
}

// --- lifecycle --------------------------------------------------------------------------------------

TEST(HttpTransport, ATakenPortFailsStartWithAClearError) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(::listen(fd, 4), 0);
    socklen_t len = sizeof a;
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    const int port = ntohs(a.sin_port);

    TestServer s({.listen = "127.0.0.1:" + std::to_string(port)});
    Error e = capture_error([&] { s.start(); });
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_THAT(e.what(), HasSubstr("127.0.0.1:" + std::to_string(port)));
    EXPECT_THAT(e.what(), HasSubstr("in use"));
    ::close(fd);
}

TEST(HttpTransport, BadListenAddressesAreConfigErrors) {
    for (const char* listen : {"127.0.0.1", "127.0.0.1:99999", "::1:80", "host:port"}) {
        SCOPED_TRACE(listen);
        Error e = capture_error([&] { TestServer s({.listen = listen}); });
        EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
        EXPECT_THAT(e.what(), HasSubstr("transports[0].listen"));
    }
}

TEST(HttpTransport, StopLetsInFlightRequestsFinish) {
    auto s = started({.items = 1});
    const std::string photo = jpeg_string(easy_photo(gallery_images()[0]));
    const std::string head = "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: " +
                             std::to_string(photo.size()) + "\r\n\r\n";
    int fd = connect_to(s->port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, head + photo.substr(0, photo.size() / 2)));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto& transport = *s->host().transports().at(0);
    auto stopping = std::async(std::launch::async, [&] { transport.stop(std::chrono::seconds(10)); });
    // New connections are refused once stop has begun.
    bool refused = false;
    for (int i = 0; i < 100 && !refused; ++i) {
        int other = connect_to(s->port());
        refused = other < 0;
        if (other >= 0) ::close(other);
        if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(refused);
    EXPECT_EQ(stopping.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
        << "stop returned while a request was in flight";
    ASSERT_TRUE(send_all(fd, photo.substr(photo.size() / 2)));
    Received r = receive(fd, std::chrono::seconds(30), complete_response);
    ::close(fd);
    EXPECT_EQ(status_of(r.data), 200) << r.data;
    EXPECT_TRUE(json::parse(body_of(r.data), nullptr, false).contains("matches"));
    EXPECT_EQ(stopping.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

TEST(HttpTransport, TheGalleryPersistsAcrossARestart) {
    TempDir dir("sightline-http-restart");
    const auto images = gallery_images();
    const std::string image = file_text(images[kQueryItem]);
    const json meta{{"title", "kept"}};
    {
        auto s = started({.storage = dir.path() / "gallery"});
        auto res = s->client()->Put("/v1/gallery/kept-item",
                                    httplib::MultipartFormDataItems{{"image", image, "k.jpg", "image/jpeg"},
                                                                    {"metadata", meta.dump(), "", "application/json"}});
        ASSERT_TRUE(res);
        ASSERT_EQ(res->status, 201) << res->body;
    }
    auto s = started({.storage = dir.path() / "gallery"});
    auto c = s->client();
    auto res = c->Get("/v1/gallery/kept-item");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200);
    EXPECT_EQ(res->body, image);
    EXPECT_EQ(body_json(c->Get("/v1/gallery/kept-item/metadata")), meta);
    EXPECT_EQ(body_json(c->Get("/v1/gallery"))["items"], json({"kept-item"}));
    res = c->Post("/v1/recognize", jpeg_string(easy_photo(images[kQueryItem])), "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json r = body_json(res);
    ASSERT_FALSE(r["matches"].empty());
    EXPECT_EQ(r["matches"][0]["id"], "kept-item");
    EXPECT_EQ(r["matches"][0]["metadata"], meta);
}

// --- the real `sightline serve` ---------------------------------------------------------------------

namespace {

struct ServeProcess {
    pid_t pid = -1;
    fs::path log;
    int port = -1;
    // Starts `sightline --config CONFIG serve` with SIGHTLINE_TOKEN=kToken in its environment,
    // output to log_file; returns once /readyz answers 200 (fatal failure otherwise).
    void start(const fs::path& config, const fs::path& log_file) {
        log = log_file;
        // Everything the child needs is prepared before fork (only async-signal-safe calls after it).
        std::vector<std::string> env_strings;
        for (char** e = environ; *e; ++e)
            if (std::string_view(*e).rfind("SIGHTLINE_TOKEN=", 0) != 0) env_strings.emplace_back(*e);
        env_strings.push_back(std::string("SIGHTLINE_TOKEN=") + kToken);
        std::vector<char*> envp;
        for (auto& e : env_strings) envp.push_back(e.data());
        envp.push_back(nullptr);
        std::string cli = SIGHTLINE_CLI, config_arg = config.string(), opt = "--config", cmd = "serve";
        std::vector<char*> argv{cli.data(), opt.data(), config_arg.data(), cmd.data(), nullptr};
        const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ASSERT_GE(out, 0);
        pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            ::dup2(out, 1);
            ::dup2(out, 2);
            ::execve(cli.c_str(), argv.data(), envp.data());
            ::_exit(127);
        }
        ::close(out);
        // The port is in the log; then wait for readiness.
        for (int i = 0; i < 600 && port < 0; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            std::vector<std::string> lines;
            std::istringstream in(fs::exists(log) ? read_text(log) : "");
            for (std::string l; std::getline(in, l);) lines.push_back(l);
            port = port_from_log(lines);
            ASSERT_EQ(::waitpid(pid, nullptr, WNOHANG), 0) << "serve exited:\n" << read_text(log);
        }
        ASSERT_GT(port, 0) << read_text(log);
        httplib::Client c("127.0.0.1", port);
        bool ready = false;
        for (int i = 0; i < 1200 && !ready; ++i) {
            auto res = c.Get("/readyz");
            ready = res && res->status == 200;
            if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ASSERT_TRUE(ready) << read_text(log);
    }
    ~ServeProcess() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
    // The exit status, or -1 if it did not end in time.
    int wait_exit(std::chrono::seconds timeout) {
        const auto until = Clock::now() + timeout;
        while (Clock::now() < until) {
            int status = 0;
            pid_t r = ::waitpid(pid, &status, WNOHANG);
            if (r == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return -1;
    }
};

}  // namespace

TEST(HttpServe, SigtermDrainsInFlightRequestsAndExitsZero) {
    TempDir dir("sightline-http-serve");
    const fs::path config = dir / "serve.yaml";
    write_text(config, "plugins: { paths: [" + yq(plugin_dir()) + "] }\n"
                       "storages:\n  gallery: { type: local, root: " + yq(dir / "gallery") + ", fsync: false }\n"
                       "gallery: { storage: gallery }\n"
                       "pipelines:\n  orb:\n    features: { type: orb, max_features: 1000, fast_threshold: 12 }\n"
                       "    index: { type: bruteforce, ratio: 0.8 }\n"
                       "limits: { workers: 2, request_timeout: 30s, shutdown_timeout: 20s }\n"
                       "logging: { level: info }\n"
                       "transports:\n  - { type: http, listen: \"127.0.0.1:0\", read_timeout: 10s, token: \"${SIGHTLINE_TOKEN}\" }\n");
    ServeProcess serve;
    ASSERT_NO_FATAL_FAILURE(serve.start(config, dir / "serve.log"));
    const int port = serve.port;
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);

    // The token came from the environment.
    const auto images = gallery_images();
    const std::string image = file_text(images[kQueryItem]);
    auto unauthorised = c.Put("/v1/gallery/item", image, "image/jpeg");
    ASSERT_TRUE(unauthorised);
    EXPECT_EQ(unauthorised->status, 401);
    auto res = c.Put("/v1/gallery/item", bearer(kToken), image, "image/jpeg");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 201) << res->body;

    // A request in flight (half its body sent) when SIGTERM arrives.
    const std::string photo = jpeg_string(easy_photo(images[kQueryItem]));
    int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(send_all(fd, "POST /v1/recognize HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: " +
                                 std::to_string(photo.size()) + "\r\n\r\n" + photo.substr(0, photo.size() / 2)));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_EQ(::kill(serve.pid, SIGTERM), 0);
    bool refused = false;
    for (int i = 0; i < 150 && !refused; ++i) {
        int other = connect_to(port);
        refused = other < 0;
        if (other >= 0) ::close(other);
        if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(refused) << "new connections were still accepted after SIGTERM";
    EXPECT_EQ(::waitpid(serve.pid, nullptr, WNOHANG), 0) << "serve exited with a request in flight";
    ASSERT_TRUE(send_all(fd, photo.substr(photo.size() / 2)));
    Received r = receive(fd, std::chrono::seconds(30), complete_response);
    ::close(fd);
    EXPECT_EQ(status_of(r.data), 200) << r.data;
    json j = json::parse(body_of(r.data), nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.data;
    ASSERT_FALSE(j["matches"].empty()) << r.data;
    EXPECT_EQ(j["matches"][0]["id"], "item");

    EXPECT_EQ(serve.wait_exit(std::chrono::seconds(30)), 0) << read_text(serve.log);
    const std::string log = read_text(serve.log);
    EXPECT_THAT(log, HasSubstr("SIGTERM"));
    EXPECT_THAT(log, HasSubstr("POST /v1/recognize 200"));
    EXPECT_THAT(log, Not(HasSubstr(kToken)));
}

TEST(HttpServe, Kill9DuringABurstOfAddsLosesNoAcknowledgedAdd) {
    TempDir dir("sightline-http-kill9");
    const fs::path config = dir / "serve.yaml";
    // index-vocab with the shipped vocabulary (config/scale-vocab.yaml's extractor), fsync on: what
    // a 201 promises must be on disk.
    write_text(config, "plugins: { paths: [" + yq(plugin_dir()) + "] }\n"
                       "storages:\n  gallery: { type: local, root: " + yq(dir / "gallery") + " }\n"
                       "  vocab: { type: local, root: " + yq(source_dir() / "config" / "vocabularies") + " }\n"
                       "gallery: { storage: gallery }\n"
                       "pipelines:\n  orb:\n    features: { type: orb, max_features: 1000, fast_threshold: 12 }\n"
                       "    index: { type: vocab, vocabulary: orb-default.voc, max_features: 400 }\n"
                       "    verify: { rematch: false, min_inlier_ratio: 0.1 }\n"
                       "limits: { workers: 2, request_timeout: 30s }\n"
                       "logging: { level: info }\n"
                       "transports:\n  - { type: http, listen: \"127.0.0.1:0\", token: \"${SIGHTLINE_TOKEN}\" }\n");
    const auto images = gallery_images();
    ASSERT_GE(images.size(), 40u);
    std::vector<std::string> bodies;
    for (const auto& f : images) bodies.push_back(file_text(f));
    // A first run leaves a snapshot behind (4 items, clean shutdown), so the restart below loads it
    // and must replay the journal for everything added after it.
    {
        ServeProcess serve;
        ASSERT_NO_FATAL_FAILURE(serve.start(config, dir / "serve1.log"));
        httplib::Client c("127.0.0.1", serve.port);
        for (int i = 0; i < 4; ++i) {
            auto res = c.Put("/v1/gallery/base" + std::to_string(i), bearer(kToken), bodies[static_cast<std::size_t>(i)], "image/jpeg");
            ASSERT_TRUE(res);
            ASSERT_EQ(res->status, 201) << res->body;
        }
        ASSERT_EQ(::kill(serve.pid, SIGTERM), 0);
        ASSERT_EQ(serve.wait_exit(std::chrono::seconds(30)), 0) << read_text(serve.log);
    }
    ServeProcess serve;
    ASSERT_NO_FATAL_FAILURE(serve.start(config, dir / "serve2.log"));
    // Two clients add items as fast as they can; after 12 acknowledgements the server is killed.
    std::mutex mutex;
    std::vector<std::string> acknowledged;
    std::atomic<bool> stop{false};
    auto client = [&](int lane) {
        httplib::Client c("127.0.0.1", serve.port);
        c.set_read_timeout(30, 0);
        for (int i = lane; i < 36 && !stop; i += 2) {
            const std::string id = "burst" + std::to_string(i);
            auto res = c.Put("/v1/gallery/" + id, bearer(kToken), bodies[static_cast<std::size_t>(4 + i)], "image/jpeg");
            if (!res) return;  // the server is gone
            if (res->status == 201) {
                std::lock_guard lock(mutex);
                acknowledged.push_back(id);
            }
        }
    };
    std::thread a(client, 0), b(client, 1);
    for (int i = 0; i < 1200; ++i) {
        {
            std::lock_guard lock(mutex);
            if (acknowledged.size() >= 12) break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(::kill(serve.pid, SIGKILL), 0);
    stop = true;
    a.join();
    b.join();
    EXPECT_EQ(serve.wait_exit(std::chrono::seconds(10)), 128 + SIGKILL);
    ASSERT_GE(acknowledged.size(), 12u);

    ::setenv("SIGHTLINE_TOKEN", kToken, 1);  // the config names it; this process is the restart
    auto host = std::make_unique<Host>(load_config_file(config.string()));
    auto stats = host->pipeline().load(host->gallery());
    EXPECT_TRUE(stats.from_snapshot);
    EXPECT_GE(stats.replayed, acknowledged.size());
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(host->pipeline().contains("base" + std::to_string(i)));
    for (const auto& id : acknowledged) {
        EXPECT_TRUE(host->gallery().contains(id)) << id << " was acknowledged but is not in the gallery";
        EXPECT_TRUE(host->pipeline().contains(id)) << id << " was acknowledged but is not indexed";
    }
    // And it is recognisable, not just listed.
    Request r;
    r.id = "q";
    r.image = read_bytes(images[4 + static_cast<std::size_t>(std::stoi(acknowledged.back().substr(5)))]);
    auto result = host->pipeline().recognize(r);
    ASSERT_FALSE(result.matches.empty()) << (result.error ? result.error->message : "no match");
    EXPECT_EQ(result.matches[0].id, acknowledged.back());
}
