// transport-http: the JSON HTTP API of DESIGN.md (docs/api.md) on Boost.Beast.
//
// Threads: `io_threads` event loops read and write every connection asynchronously, under
// deadlines (the idle wait, the whole header, body progress and the whole body, the answer), and
// hand only complete requests to `threads` handler threads, which block on the Service. A slow or
// idle client therefore holds a socket, never a handler thread (cpp-httplib, used before, held a
// thread per open connection: eight slow clients locked everyone out; docs/api.md).
// Early answers (401, 404/405, 413 from Content-Length) are sent before the body is read; the body
// is then read and dropped by its length when that is cheap, otherwise the connection is closed
// after the answer (Connection: close) and what the client still sends is never parsed.
// Parsing of what a request carried lives in request_parsing.cpp (no sockets; fuzzed).
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <sightline/plugin.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <thread>

#include "request_parsing.hpp"
#include "responses.hpp"

namespace {

using namespace sightline;
using namespace sightline::http;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// A multipart upload may exceed limits.max_body_bytes by this much: the gallery's metadata field,
// client fields and the multipart framing. The image itself is held to max_body_bytes.
constexpr std::uint64_t kEnvelopeBytes = (1u << 20) + (64u << 10);
constexpr std::size_t kMaxParts = 40;
// Bodies of requests that take none (GET, DELETE) are read and dropped up to this size.
constexpr std::uint64_t kSmallBody = 64u << 10;
constexpr std::uint32_t kHeaderLimit = 16u << 10;
// After an early answer with Connection: close, what the client still sends is read and dropped
// for this long (at most kLingerBytes) before closing, so that closing with unread data (a TCP
// reset) cannot destroy the answer before the client reads it.
constexpr auto kLinger = std::chrono::seconds(2);
constexpr std::uint64_t kLingerBytes = 64u << 20;

// Every route, for metrics labels, the access log and 405 answers.
struct Route {
    const char* method;
    const char* label;  // "GET /v1/gallery/{id}"
    const char* pattern;
    bool upload;        // takes an image body
    bool needs_token;   // a gallery change
};
constexpr std::array<Route, 11> kRoutes{{
    {"GET", "GET /healthz", "/healthz", false, false},
    {"GET", "GET /readyz", "/readyz", false, false},
    {"GET", "GET /metrics", "/metrics", false, false},
    {"POST", "POST /v1/recognize", "/v1/recognize", true, false},
    {"POST", "POST /v1/requests", "/v1/requests", true, false},
    {"GET", "GET /v1/requests/{id}", "/v1/requests/([^/]+)", false, false},
    {"GET", "GET /v1/gallery", "/v1/gallery", false, false},
    {"GET", "GET /v1/gallery/{id}", "/v1/gallery/([^/]+)", false, false},
    {"GET", "GET /v1/gallery/{id}/metadata", "/v1/gallery/([^/]+)/metadata", false, false},
    {"PUT", "PUT /v1/gallery/{id}", "/v1/gallery/([^/]+)", true, true},
    {"DELETE", "DELETE /v1/gallery/{id}", "/v1/gallery/([^/]+)", false, true},
}};
constexpr const char* kUnmatched = "unmatched";

// A complete request as a handler sees it.
struct Call {
    std::string method;  // as sent; HEAD is routed as GET
    std::string target;  // as sent, for the log
    Target parsed;       // decoded path and query
    bhttp::fields headers;
    std::string body;
    const Route* route = nullptr;
    std::string match;  // the route's {id}
    std::string header(bhttp::field f) const { return std::string(headers[f]); }
    std::string header(const char* name) const { return std::string(headers[name]); }
};

// What a handler answers.
struct Answer {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::string content_type;
    std::string request_id;  // for the access log
    bool close = false;      // Connection: close after it

    void set_header(std::string name, std::string value) {
        for (auto& [k, v] : headers)
            if (k == name) {
                v = std::move(value);
                return;
            }
        headers.emplace_back(std::move(name), std::move(value));
    }
    bool has_header(std::string_view name) const {
        return std::any_of(headers.begin(), headers.end(), [&](const auto& h) { return h.first == name; });
    }
};

void send_json(Answer& a, int status, const nlohmann::json& body) {
    a.status = status;
    a.body = json_text(body);
    a.content_type = "application/json";
}

void send_error(Answer& a, int status, std::string_view code, std::string_view message, std::string_view request_id = {}) {
    if (status == 503 && !a.has_header("Retry-After")) a.set_header("Retry-After", "1");
    send_json(a, status, error_json(code, message, request_id));
}

[[noreturn]] void fail(int status, std::string code, const std::string& message) {
    throw RequestError(status, std::move(code), message);
}

// A sightline::Error from the service as an HTTP answer.
[[noreturn]] void fail_service(const Error& e, bool exhausted_is_queue) {
    fail(status_for(e.code(), exhausted_is_queue), to_string(e.code()), e.what());
}

class HttpTransport;

// One client connection; lives as long as an operation or a handler holds it.
class Connection : public std::enable_shared_from_this<Connection> {
public:
    Connection(HttpTransport& t, tcp::socket socket, std::string client);
    ~Connection();
    void start();
    // The transport stops: an idle connection closes now, a request in progress closes once answered.
    void stop();

private:
    enum class State { idle, header, body, handling, writing, closing };
    void wait_for_request();
    void read_header();
    void on_header(beast::error_code ec);
    void read_body();
    void on_body(beast::error_code ec);
    void dispatch();
    void answer(Answer a);
    void write(std::shared_ptr<bhttp::response<bhttp::string_body>> res, bool close);
    void linger_close();
    void close_now();

    HttpTransport& t_;
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    std::string client_;
    State state_ = State::idle;
    bool stopping_ = false;
    bool head_ = false;
    std::optional<Answer> refusal_;  // an early answer, sent once the body has been dropped
    Call call_;
    Clock::time_point started_{};
    Clock::time_point body_deadline_{};
    std::uint64_t lingered_ = 0;
    std::size_t served_ = 0;  // requests answered on this connection
    std::array<char, 16384> drop_{};
};

class HttpTransport final : public Transport {
public:
    static constexpr const char* version = "2.0.0";
    static constexpr const char* description =
        "HTTP/1.1 JSON API: recognition (sync and queue-and-poll), gallery changes, health, readiness, metrics";
    static ConfigSchema config_schema() {
        static const std::array<ConfigKey, 13> keys{{
            {.name = "listen", .type = ConfigType::string, .default_value = "127.0.0.1:8080",
             .description = "address:port to listen on ([v6addr]:port for IPv6, :port for every address); port 0 "
                            "picks a free port and logs it"},
            {.name = "threads", .type = ConfigType::integer, .default_value = "8", .min = 1, .max = 1024,
             .description = "handler threads: complete requests handled at once (slow clients never hold one)"},
            {.name = "io_threads", .type = ConfigType::integer, .default_value = "1", .min = 1, .max = 64,
             .description = "event-loop threads reading and writing every connection"},
            {.name = "read_timeout", .type = ConfigType::duration, .default_value = "10s", .min = 1, .max = 3600000,
             .description = "a request's headers must arrive within this of its first byte, and its body may not "
                            "stall for longer"},
            {.name = "body_timeout", .type = ConfigType::duration, .default_value = "60s", .min = 1, .max = 3600000,
             .description = "the whole body must arrive within this of the end of the headers"},
            {.name = "idle_timeout", .type = ConfigType::duration, .default_value = "5s", .min = 1, .max = 3600000,
             .description = "a connection with no request started for this long is closed (keep-alive)"},
            {.name = "write_timeout", .type = ConfigType::duration, .default_value = "10s", .min = 1, .max = 3600000,
             .description = "an answer the client does not read within this is dropped with the connection"},
            {.name = "max_connections", .type = ConfigType::integer, .default_value = "1024", .min = 1, .max = 1000000,
             .description = "open connections in total; more are answered 503 and closed"},
            {.name = "max_connections_per_client", .type = ConfigType::integer, .default_value = "256", .min = 1,
             .max = 1000000, .description = "open connections from one client address; more are answered 503 and closed"},
            {.name = "token", .type = ConfigType::string, .default_value = "",
             .description = "bearer token required by PUT and DELETE /v1/gallery/{id}; give it as ${SIGHTLINE_TOKEN} "
                            "(secrets come from the environment only); empty: no token needed"},
            {.name = "max_page", .type = ConfigType::integer, .default_value = "1000", .min = 1, .max = 1000000,
             .description = "largest page GET /v1/gallery returns (its limit parameter is capped at this)"},
            {.name = "access_log", .type = ConfigType::boolean, .default_value = "true",
             .description = "log one line per request: method, path, status, request bytes, milliseconds, request id"},
            {.name = "max_keepalive_requests", .type = ConfigType::integer, .default_value = "1000", .min = 1,
             .max = 100000000, .description = "requests served on one connection before it is closed"},
        }};
        return keys;
    }

    explicit HttpTransport(Context& ctx)
        : log_(ctx.logger()),
          metrics_(ctx.metrics()),
          listen_text_(ctx.config().get_string("listen")),
          threads_(static_cast<std::size_t>(ctx.config().get_int("threads"))),
          io_threads_(static_cast<std::size_t>(ctx.config().get_int("io_threads"))),
          read_timeout_(ctx.config().get_duration("read_timeout")),
          body_timeout_(ctx.config().get_duration("body_timeout")),
          idle_timeout_(ctx.config().get_duration("idle_timeout")),
          write_timeout_(ctx.config().get_duration("write_timeout")),
          max_connections_(static_cast<std::size_t>(ctx.config().get_int("max_connections"))),
          max_per_client_(static_cast<std::size_t>(ctx.config().get_int("max_connections_per_client"))),
          max_keepalive_(static_cast<std::size_t>(ctx.config().get_int("max_keepalive_requests"))),
          token_(ctx.config().get_string("token")),
          max_page_(static_cast<std::size_t>(ctx.config().get_int("max_page"))),
          access_log_(ctx.config().get_bool("access_log")) {
        const Config& c = ctx.config();
        try {
            listen_ = parse_listen(listen_text_);
        } catch (const std::invalid_argument& e) {
            throw Error(ErrorCode::invalid_argument, c.where("listen") + ": " + c.key_path("listen") + ": " + e.what());
        }
        for (char ch : token_)
            if (static_cast<unsigned char>(ch) <= 32 || static_cast<unsigned char>(ch) >= 127)
                throw Error(ErrorCode::invalid_argument,
                            c.where("token") + ": " + c.key_path("token") +
                                ": the token must be printable ASCII without spaces (its value is not shown)");
        const std::vector<double> buckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
        for (const auto& r : kRoutes)
            latency_[r.label] = &metrics_.histogram("http_request_seconds", "HTTP request handling time by route",
                                                    buckets, {{"route", r.label}});
        latency_[kUnmatched] = &metrics_.histogram("http_request_seconds", "HTTP request handling time by route",
                                                   buckets, {{"route", kUnmatched}});
        for (const auto& r : kRoutes) route_regex_.emplace_back(r.pattern);
        open_connections_ = &metrics_.gauge("http_open_connections", "client connections open now");
        for (const char* why : {"max_connections", "max_connections_per_client"})
            refused_[why] = &metrics_.counter("http_connections_refused_total",
                                              "connections answered 503 and closed at a connection limit",
                                              {{"limit", why}});
        for (const char* phase : {"idle", "header", "body", "write"})
            timeouts_[phase] = &metrics_.counter("http_timeouts_total", "connections closed at a deadline, by phase",
                                                 {{"phase", phase}});
    }

    ~HttpTransport() override { stop(std::chrono::milliseconds(0)); }

    void start(Service& service) override {
        std::lock_guard lock(lifecycle_);
        if (io_) throw Error(ErrorCode::internal, "transport-http: start() called twice");
        service_ = &service;
        const ServiceLimits limits = service.limits();
        max_body_bytes_ = limits.max_body_bytes;
        parse_limits_.max_image_bytes = limits.max_body_bytes;

        auto io = std::make_unique<asio::io_context>(static_cast<int>(io_threads_));
        auto acceptor = std::make_unique<tcp::acceptor>(*io);
        beast::error_code ec;
        const std::string host = listen_.host == "localhost" ? "127.0.0.1" : listen_.host;
        const auto address = asio::ip::make_address(host, ec);
        if (ec)
            throw Error(ErrorCode::invalid_argument,
                        "transport-http: cannot listen on " + listen_text_ + ": '" + host + "' is not an IP address");
        const tcp::endpoint endpoint(address, static_cast<unsigned short>(listen_.port));
        auto refuse = [&](const char* step) {
            std::string why = ec.message();
            if (ec == asio::error::address_in_use) why += " (another process listens there: choose another port in `listen`)";
            throw Error(ErrorCode::unavailable, "transport-http: cannot listen on " + listen_text_ + ": " + why + " (" +
                                                    step + ")");
        };
        // SO_REUSEADDR only (no SO_REUSEPORT, which would let a second server bind the port silently).
        if (acceptor->open(endpoint.protocol(), ec)) refuse("socket");
        if (acceptor->set_option(asio::socket_base::reuse_address(true), ec)) refuse("SO_REUSEADDR");
        if (acceptor->bind(endpoint, ec)) refuse("bind");
        if (acceptor->listen(asio::socket_base::max_listen_connections, ec)) refuse("listen");
        port_ = acceptor->local_endpoint().port();

        io_ = std::move(io);
        acceptor_ = std::move(acceptor);
        work_.emplace(io_->get_executor());
        handlers_ = std::make_unique<asio::thread_pool>(threads_);
        accepting_ = true;
        accept();
        for (std::size_t i = 0; i < io_threads_; ++i)
            io_threads_running_.emplace_back([this] {
                for (;;) {
                    try {
                        io_->run();
                        return;
                    } catch (const std::exception& e) {
                        // A handler escaped; the loop goes on serving everyone else.
                        log_->error("event loop: {}", escaped(e.what()));
                    }
                }
            });
        log_->info("listening on http://{}:{} ({} threads, {} io threads; bearer token for gallery changes: {})",
                   listen_.host.find(':') != std::string::npos ? "[" + listen_.host + "]" : listen_.host, port_,
                   threads_, io_threads_, token_.empty() ? "not required" : "required");
        if (token_.empty() && listen_.host != "127.0.0.1" && listen_.host != "::1" && listen_.host != "localhost")
            log_->warn("no token is configured: anyone who reaches {} can change the gallery (set token: "
                       "${{SIGHTLINE_TOKEN}})",
                       listen_text_);
    }

    void stop(std::chrono::milliseconds drain_deadline) override {
        std::lock_guard lock(lifecycle_);
        if (!io_) return;
        log_->info("stopping: no new connections; in-flight requests get up to {} ms", drain_deadline.count());
        // Close the listening socket on its own executor, then every idle connection.
        std::promise<void> closed;
        asio::post(io_->get_executor(), [&] {
            accepting_ = false;
            beast::error_code ignored;
            acceptor_->close(ignored);
            closed.set_value();
        });
        closed.get_future().wait();
        for (const auto& c : connections_snapshot()) c->stop();
        {
            std::unique_lock l(connections_mutex_);
            if (!connections_cv_.wait_for(l, drain_deadline, [&] { return connections_.empty(); }))
                log_->warn("requests are still running after the drain deadline; waiting for them (each ends within "
                           "read_timeout, body_timeout, write_timeout or limits.request_timeout)");
            connections_cv_.wait(l, [&] { return connections_.empty(); });
        }
        handlers_->join();
        work_.reset();
        io_->stop();
        for (auto& t : io_threads_running_) t.join();
        io_threads_running_.clear();
        acceptor_.reset();
        handlers_.reset();
        io_.reset();
        log_->info("stopped");
    }

private:
    friend class Connection;

    // ---------------------------------------------------------------- connections

    void accept() {
        acceptor_->async_accept(asio::make_strand(*io_), [this](beast::error_code ec, tcp::socket socket) {
            if (!accepting_) return;
            if (!ec) admit(std::move(socket));
            else if (ec != asio::error::operation_aborted)
                log_->warn("accept failed: {} (still accepting)", ec.message());
            if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
                // Out of file descriptors: pause rather than spin.
                auto timer = std::make_shared<asio::steady_timer>(*io_, std::chrono::milliseconds(100));
                timer->async_wait([this, timer](beast::error_code) {
                    if (accepting_) accept();
                });
                return;
            }
            accept();
        });
    }

    void admit(tcp::socket socket) {
        beast::error_code ec;
        const auto remote = socket.remote_endpoint(ec);
        if (ec) return;  // already gone
        socket.set_option(tcp::no_delay(true), ec);
        const std::string client = remote.address().to_string();
        const char* refused = nullptr;
        {
            std::lock_guard l(connections_mutex_);
            if (connections_.size() >= max_connections_) refused = "max_connections";
            else if (per_client_[client] >= max_per_client_) refused = "max_connections_per_client";
            if (per_client_[client] == 0 && refused) per_client_.erase(client);
        }
        if (refused) {
            refused_.at(refused)->inc();
            // A best-effort answer without waiting for the client; the socket is closed at once.
            const std::string body = json_text(error_json(
                "resource_exhausted", std::string("too many open connections (") + refused + "); retry later"));
            const std::string res = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                    "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
                                    std::to_string(body.size()) + "\r\n\r\n" + body;
            socket.non_blocking(true, ec);
            socket.send(asio::buffer(res), 0, ec);
            socket.shutdown(tcp::socket::shutdown_both, ec);
            return;
        }
        auto c = std::make_shared<Connection>(*this, std::move(socket), client);
        c->start();
    }

    void registered(Connection* c, const std::shared_ptr<Connection>& shared, const std::string& client) {
        std::lock_guard l(connections_mutex_);
        connections_[c] = shared;
        ++per_client_[client];
        open_connections_->set(static_cast<double>(connections_.size()));
    }

    void unregistered(Connection* c, const std::string& client) {
        std::lock_guard l(connections_mutex_);
        connections_.erase(c);
        if (auto it = per_client_.find(client); it != per_client_.end() && --it->second == 0) per_client_.erase(it);
        open_connections_->set(static_cast<double>(connections_.size()));
        connections_cv_.notify_all();
    }

    std::vector<std::shared_ptr<Connection>> connections_snapshot() {
        std::lock_guard l(connections_mutex_);
        std::vector<std::shared_ptr<Connection>> out;
        for (const auto& [_, weak] : connections_)
            if (auto c = weak.lock()) out.push_back(std::move(c));
        return out;
    }

    // ---------------------------------------------------------------- routing and early answers

    // The route for a method and decoded path; nullptr when none. Sets `match` to the {id}.
    const Route* route_for(std::string_view method, const std::string& path, std::string& match) const {
        const std::string m = method == "HEAD" ? "GET" : std::string(method);
        for (std::size_t i = 0; i < kRoutes.size(); ++i) {
            std::smatch sm;
            if (m == kRoutes[i].method && std::regex_match(path, sm, route_regex_[i])) {
                match = sm.size() > 1 ? sm[1].str() : std::string();
                return &kRoutes[i];
            }
        }
        return nullptr;
    }

    // 404 or 405 for a request no route takes.
    void no_route(const Call& call, Answer& a) const {
        std::string allowed;
        for (std::size_t i = 0; i < kRoutes.size(); ++i)
            if (std::regex_match(call.parsed.path, route_regex_[i]) &&
                allowed.find(kRoutes[i].method) == std::string::npos)
                allowed += (allowed.empty() ? "" : ", ") + std::string(kRoutes[i].method);
        if (!allowed.empty()) {
            a.set_header("Allow", allowed);
            send_error(a, 405, "unsupported",
                       escaped(call.method, 32) + " is not allowed on " + escaped(call.parsed.path) + " (allowed: " +
                           allowed + ")");
        } else {
            send_error(a, 404, "not_found",
                       "no such endpoint: " + escaped(call.method, 32) + " " + escaped(call.parsed.path) +
                           " (see docs/api.md)");
        }
    }

    // The largest body this request may carry.
    std::uint64_t body_limit(const Call& call) const {
        if (!call.route || !call.route->upload) return kSmallBody;
        const auto mt = parse_media_type(call.header(bhttp::field::content_type));
        return mt && mt->type == "multipart/form-data" ? max_body_bytes_ + kEnvelopeBytes : max_body_bytes_;
    }

    std::string over_limit_message(std::uint64_t limit, const std::string& length) const {
        if (limit == kSmallBody)
            return "the request body is over the limit of " + std::to_string(kSmallBody) + " bytes for this endpoint";
        return "the request body is " + (length.empty() ? std::string("more than ") + std::to_string(limit) + " bytes" :
                                                          length + " bytes") +
               ", over the limit of " + std::to_string(max_body_bytes_) +
               " bytes (limits.max_body_bytes; multipart uploads may add " + std::to_string(kEnvelopeBytes) +
               " bytes of fields and framing)";
    }

    // An answer decided from the headers alone (the body is not needed for it), or nullopt.
    std::optional<Answer> early_answer(const Call& call, std::uint64_t content_length, bool has_length) const {
        Answer a;
        if (!call.route) {
            no_route(call, a);
            return a;
        }
        if (has_length && content_length > body_limit(call)) {
            send_error(a, 413, "resource_exhausted", over_limit_message(body_limit(call), std::to_string(content_length)));
            return a;
        }
        if (call.route->needs_token) {
            try {
                authorize(call, a);
            } catch (const RequestError& e) {
                send_error(a, e.status(), e.code(), e.what());
                return a;
            }
        }
        return std::nullopt;
    }

    // ---------------------------------------------------------------- handlers

    Answer handle(const Call& call) {
        Answer a;
        try {
            switch (call.route - kRoutes.data()) {
                case 0: send_json(a, 200, {{"status", "ok"}}); break;
                case 1:
                    if (service_->ready()) send_json(a, 200, {{"ready", true}});
                    else send_error(a, 503, "unavailable", "the gallery is still loading");
                    break;
                case 2:
                    a.status = 200;
                    a.body = service_->metrics_text();
                    a.content_type = "text/plain; version=0.0.4; charset=utf-8";
                    break;
                case 3: recognize(call, a, false); break;
                case 4: recognize(call, a, true); break;
                case 5: request_status(call, a); break;
                case 6: gallery_list(call, a); break;
                case 7: gallery_get(call, a, false); break;
                case 8: gallery_get(call, a, true); break;
                case 9: gallery_put(call, a); break;
                case 10: gallery_delete(call, a); break;
                default: fail(500, "internal", "no handler for the route");
            }
        } catch (const RequestError& e) {
            send_error(a, e.status(), e.code(), e.what(), a.request_id);
        } catch (const Error& e) {
            send_error(a, status_for(e.code(), true), to_string(e.code()), e.what(), a.request_id);
        } catch (const std::exception& e) {
            log_->error("{} {}: {}", escaped(call.method, 32), escaped(call.parsed.path), escaped(e.what()));
            send_error(a, 500, "internal", "internal error", a.request_id);
        } catch (...) {
            log_->error("{} {}: an exception that is not a std::exception", escaped(call.method, 32),
                        escaped(call.parsed.path));
            send_error(a, 500, "internal", "internal error", a.request_id);
        }
        return a;
    }

    // Metrics and the access log, once per answer.
    void observe(const Call& call, const Answer& a, Clock::time_point started) {
        const char* route = call.route ? call.route->label : kUnmatched;
        const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
        requests_counter(route, a.status).inc();
        if (auto it = latency_.find(route); it != latency_.end()) it->second->observe(seconds);
        if (access_log_) {
            std::string length = call.header(bhttp::field::content_length);
            if (length.empty()) length = std::to_string(call.body.size());
            log_->info("{} {} {} {}B {:.1f}ms id={}", escaped(call.method, 32), escaped(call.target), a.status,
                       escaped(length, 20), seconds * 1000.0, a.request_id.empty() ? "-" : escaped(a.request_id));
        }
    }

    Counter& requests_counter(const char* route, int status) {
        std::lock_guard lock(counters_mutex_);
        auto key = std::make_pair(std::string(route), status);
        auto it = counters_.find(key);
        if (it == counters_.end())
            it = counters_
                     .emplace(key, &metrics_.counter("http_requests_total", "HTTP requests by route and status",
                                                     {{"route", route}, {"status", std::to_string(status)}}))
                     .first;
        return *it->second;
    }

    // 401 unless the gallery needs no token or the request carries the right one.
    void authorize(const Call& call, Answer& a) const {
        if (token_.empty()) return;
        const std::string header = call.header(bhttp::field::authorization);
        auto given = bearer_token(header);
        if (!given) {
            a.set_header("WWW-Authenticate", "Bearer realm=\"sightline\"");
            fail(401, "unauthenticated", "this call needs an Authorization: Bearer <token> header");
        }
        if (!constant_time_equal(*given, token_)) {
            a.set_header("WWW-Authenticate", "Bearer realm=\"sightline\", error=\"invalid_token\"");
            fail(401, "unauthenticated", "the bearer token is not valid");
        }
    }

    static std::string item_id(const Call& call) {
        if (auto why = invalid_item_id_reason(call.match)) fail(400, "invalid_argument", "invalid gallery item id: " + *why);
        return call.match;
    }

    // What a POST or PUT carried: multipart fields or the raw body.
    Upload upload(const Call& call, const PartCap& part_cap) const {
        Upload up;
        up.content_type = call.header(bhttp::field::content_type);
        up.query = call.parsed.query;
        const auto mt = parse_media_type(up.content_type);
        if (mt && mt->type == "multipart/form-data" && mt->params.count("boundary")) {
            up.multipart = true;
            up.parts = parse_multipart(call.body, mt->params.at("boundary"), kMaxParts, part_cap);
        } else {
            if (call.body.size() > max_body_bytes_)
                fail(413, "resource_exhausted",
                     "the request body is over the limit of " + std::to_string(max_body_bytes_) +
                         " bytes (limits.max_body_bytes)");
            up.body = call.body;
        }
        return up;
    }

    void recognize(const Call& call, Answer& a, bool queued) {
        if (!service_->ready()) fail(503, "unavailable", "the gallery is still loading; retry when GET /readyz is 200");
        std::string id;
        if (call.headers.find("X-Request-Id") != call.headers.end()) {
            id = call.header("X-Request-Id");
            if (auto why = invalid_request_id_reason(id)) fail(400, "invalid_argument", "X-Request-Id: " + *why);
        }
        Upload up = upload(call, [this](const std::string& name) -> std::uint64_t {
            return name == "image" ? max_body_bytes_ : parse_limits_.max_field_bytes;
        });
        Request request = parse_recognize(up, parse_limits_);
        up = {};
        request.id = id;
        a.request_id = id;
        if (queued) {
            std::string assigned;
            try {
                assigned = service_->submit(std::move(request));
            } catch (const Error& e) {
                fail_service(e, true);
            }
            a.request_id = assigned;
            a.set_header("X-Request-Id", assigned);
            a.set_header("Location", "/v1/requests/" + assigned);
            send_json(a, 202, {{"request_id", assigned}});
            return;
        }
        Result result;
        try {
            result = service_->recognize(std::move(request));
        } catch (const Error& e) {
            fail_service(e, true);
        }
        a.request_id = result.request_id;
        a.set_header("X-Request-Id", result.request_id);
        if (result.error)
            send_error(a, status_for(result.error->code, false), result.error->code, result.error->message,
                       result.request_id);
        else
            send_json(a, 200, result_json(result));
    }

    void request_status(const Call& call, Answer& a) {
        const std::string& id = call.match;
        if (auto why = invalid_request_id_reason(id)) fail(400, "invalid_argument", *why);
        a.request_id = id;
        RequestStatus s = service_->status(id);
        switch (s.state) {
            case RequestState::unknown:
                fail(404, "not_found", "no request '" + id + "' (never submitted, or its result expired: limits.results_ttl)");
            case RequestState::pending: send_json(a, 200, {{"request_id", id}, {"state", "pending"}}); return;
            case RequestState::done: {
                nlohmann::json j{{"request_id", id}, {"state", "done"}};
                j["result"] = s.result ? result_json(*s.result) : nlohmann::json::object();
                send_json(a, 200, j);
                return;
            }
        }
    }

    void gallery_list(const Call& call, Answer& a) {
        ListQuery q = parse_list_query(call.parsed.query, max_page_);
        GalleryPage page = service_->list_items(q.after, q.limit);
        send_json(a, 200,
                  {{"items", page.ids},
                   {"total", page.total},
                   {"next_after", page.next_after.empty() ? nlohmann::json(nullptr) : nlohmann::json(page.next_after)}});
    }

    void gallery_get(const Call& call, Answer& a, bool metadata_only) {
        const std::string id = item_id(call);
        std::optional<GalleryItem> item;
        try {
            item = service_->get_item(id);
        } catch (const Error& e) {
            fail_service(e, false);
        }
        if (!item) fail(404, "not_found", "no gallery item '" + id + "'");
        a.status = 200;
        if (metadata_only) {
            a.body = item->metadata_json;
            a.content_type = "application/json";
        } else {
            a.body.assign(reinterpret_cast<const char*>(item->image.data()), item->image.size());
            a.content_type = item->content_type;
        }
    }

    void gallery_put(const Call& call, Answer& a) {
        authorize(call, a);
        const std::string id = item_id(call);
        Upload up = upload(call, [this](const std::string& name) -> std::uint64_t {
            if (name == "image") return max_body_bytes_;
            if (name == "metadata") return parse_limits_.max_metadata_bytes;
            return parse_limits_.max_field_bytes;
        });
        GalleryUpload g = parse_gallery_upload(up, parse_limits_);
        up = {};
        bool existed = false;
        try {
            existed = service_->get_item(id).has_value();
        } catch (const Error&) {
            existed = true;  // a stored item that cannot be read is still replaced
        }
        try {
            service_->put_item(id, g.image, g.metadata_json);
        } catch (const Error& e) {
            fail_service(e, false);
        }
        a.set_header("Location", "/v1/gallery/" + id);
        send_json(a, existed ? 200 : 201, {{"id", id}, {"created", !existed}});
    }

    void gallery_delete(const Call& call, Answer& a) {
        authorize(call, a);
        const std::string id = item_id(call);
        bool removed = false;
        try {
            removed = service_->remove_item(id);
        } catch (const Error& e) {
            fail_service(e, false);
        }
        if (!removed) fail(404, "not_found", "no gallery item '" + id + "'");
        a.status = 204;
    }

    std::shared_ptr<spdlog::logger> log_;
    Metrics& metrics_;
    std::string listen_text_;
    ListenAddress listen_;
    std::size_t threads_, io_threads_;
    std::chrono::milliseconds read_timeout_, body_timeout_, idle_timeout_, write_timeout_;
    std::size_t max_connections_, max_per_client_, max_keepalive_;
    std::string token_;
    std::size_t max_page_;
    bool access_log_;

    std::map<std::string, Histogram*> latency_;
    std::vector<std::regex> route_regex_;
    std::mutex counters_mutex_;
    std::map<std::pair<std::string, int>, Counter*> counters_;
    Gauge* open_connections_ = nullptr;
    std::map<std::string, Counter*> refused_;
    std::map<std::string, Counter*> timeouts_;

    Service* service_ = nullptr;
    std::uint64_t max_body_bytes_ = 0;
    ParseLimits parse_limits_;
    int port_ = 0;

    std::mutex lifecycle_;
    std::unique_ptr<asio::io_context> io_;
    std::unique_ptr<tcp::acceptor> acceptor_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::unique_ptr<asio::thread_pool> handlers_;
    std::vector<std::thread> io_threads_running_;
    std::atomic<bool> accepting_{false};

    std::mutex connections_mutex_;
    std::condition_variable connections_cv_;
    std::map<Connection*, std::weak_ptr<Connection>> connections_;
    std::map<std::string, std::size_t> per_client_;
};

// ---------------------------------------------------------------- Connection

Connection::Connection(HttpTransport& t, tcp::socket socket, std::string client)
    : t_(t), stream_(std::move(socket)), client_(std::move(client)) {}

Connection::~Connection() { t_.unregistered(this, client_); }

void Connection::start() {
    t_.registered(this, shared_from_this(), client_);
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->wait_for_request(); });
}

void Connection::stop() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
        self->stopping_ = true;
        // No request has begun: nothing to finish.
        if (self->state_ == State::idle || (self->state_ == State::header && self->buffer_.size() == 0)) self->close_now();
    });
}

void Connection::close_now() {
    state_ = State::closing;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
}

// Waits (idle_timeout) for the first byte of the next request.
void Connection::wait_for_request() {
    if (stopping_) return close_now();
    if (buffer_.size() > 0) return read_header();  // pipelined: it is already here
    state_ = State::idle;
    stream_.expires_after(t_.idle_timeout_);
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, std::size_t n) {
        if (ec) {
            if (ec == beast::error::timeout) self->t_.timeouts_.at("idle")->inc();
            return self->close_now();
        }
        self->buffer_.commit(n);
        self->read_header();
    });
}

void Connection::read_header() {
    if (stopping_ && buffer_.size() == 0) return close_now();
    state_ = State::header;
    started_ = Clock::now();
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // checked in on_header
    refusal_.reset();
    head_ = false;
    call_ = Call{};
    stream_.expires_after(t_.read_timeout_);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
}

void Connection::on_header(beast::error_code ec) {
    if (ec) {
        if (ec == beast::error::timeout) {
            t_.timeouts_.at("header")->inc();
            return close_now();
        }
        if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message || ec == asio::error::eof ||
            ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
            return close_now();
        Answer a;
        a.close = true;
        if (ec == bhttp::error::header_limit)
            send_error(a, 431, "invalid_argument",
                       "the request line and headers are over " + std::to_string(kHeaderLimit) + " bytes");
        else
            send_error(a, 400, "invalid_argument", "malformed HTTP request (" + ec.message() + ")");
        call_.method = "-";
        call_.target = "-";
        return answer(std::move(a));
    }
    const auto& req = parser_->get();
    call_.method = std::string(req.method_string());
    call_.target = std::string(req.target());
    call_.parsed = parse_target(call_.target);
    call_.headers = req.base();
    head_ = req.method() == bhttp::verb::head;
    call_.route = t_.route_for(call_.method, call_.parsed.path, call_.match);

    const bool has_length = req.find(bhttp::field::content_length) != req.end();
    const std::uint64_t length = has_length && parser_->content_length() ? *parser_->content_length() : 0;
    const bool has_body = (has_length && length > 0) || parser_->chunked();
    const bool expects_continue = beast::iequals(req[bhttp::field::expect], "100-continue");
    refusal_ = t_.early_answer(call_, length, has_length);
    if (refusal_) {
        // Answer at once, without the body, when the client waits for leave to send it, when the
        // body is too large to drop, or when there is none; otherwise drop it by its length first
        // so that the connection stays usable.
        if (!has_body || expects_continue || refusal_->status == 413) {
            refusal_->close = refusal_->close || has_body;
            Answer a = std::move(*refusal_);
            refusal_.reset();
            return answer(std::move(a));
        }
        parser_->body_limit(kSmallBody);  // dropped up to this, answered with close beyond it
    } else {
        parser_->body_limit(t_.body_limit(call_));
        if (expects_continue && has_body) {
            auto res = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_, req.version());
            stream_.expires_after(t_.write_timeout_);
            bhttp::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code wec, std::size_t) {
                if (wec) return self->close_now();
                self->body_deadline_ = Clock::now() + self->t_.body_timeout_;
                self->read_body();
            });
            return;
        }
    }
    body_deadline_ = Clock::now() + t_.body_timeout_;
    read_body();
}

// Reads the body a piece at a time: each piece within read_timeout, all of it by body_deadline_.
void Connection::read_body() {
    if (parser_->is_done()) return on_body({});
    state_ = State::body;
    stream_.expires_at(std::min(body_deadline_, Clock::now() + t_.read_timeout_));
    bhttp::async_read_some(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->on_body(ec);
        self->read_body();
    });
}

void Connection::on_body(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
        Answer a = refusal_ ? std::move(*refusal_) : Answer{};
        refusal_.reset();
        if (a.body.empty())
            send_error(a, 413, "resource_exhausted", t_.over_limit_message(t_.body_limit(call_), {}));
        a.close = true;
        return answer(std::move(a));
    }
    if (ec) {
        if (ec == beast::error::timeout) t_.timeouts_.at("body")->inc();
        else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof && ec != asio::error::connection_reset &&
                 ec != bhttp::error::partial_message) {
            // A malformed chunked body and the like: the client is told, then the connection closed.
            Answer a;
            send_error(a, 400, "invalid_argument", "the request body could not be read (" + ec.message() + ")");
            a.close = true;
            return answer(std::move(a));
        }
        return close_now();
    }
    if (refusal_) {
        Answer a = std::move(*refusal_);
        refusal_.reset();
        return answer(std::move(a));
    }
    call_.body = std::move(parser_->get().body());
    dispatch();
}

// The complete request goes to a handler thread; the answer comes back on this connection's strand.
void Connection::dispatch() {
    state_ = State::handling;
    stream_.expires_never();
    asio::post(*t_.handlers_, [self = shared_from_this()] {
        Answer a = self->t_.handle(self->call_);
        self->call_.body.clear();
        self->call_.body.shrink_to_fit();
        asio::dispatch(self->stream_.get_executor(), [self, a = std::move(a)]() mutable { self->answer(std::move(a)); });
    });
}

void Connection::answer(Answer a) {
    t_.observe(call_, a, started_);
    const unsigned version = parser_ && parser_->is_header_done() ? parser_->get().version() : 11;
    const bool keep_alive = !a.close && !stopping_ && ++served_ < t_.max_keepalive_ && parser_ &&
                            parser_->is_header_done() && parser_->get().keep_alive();
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(a.status), version);
    res->set(bhttp::field::server, "sightline");
    for (const auto& [k, v] : a.headers) res->set(k, v);
    if (!a.content_type.empty()) res->set(bhttp::field::content_type, a.content_type);
    const std::size_t length = a.body.size();
    if (!head_ && a.status != 204 && a.status != 304) res->body() = std::move(a.body);
    if (a.status != 204 && a.status != 304) res->set(bhttp::field::content_length, std::to_string(length));
    res->keep_alive(keep_alive);
    write(std::move(res), !keep_alive);
}

void Connection::write(std::shared_ptr<bhttp::response<bhttp::string_body>> res, bool close) {
    state_ = State::writing;
    stream_.expires_after(t_.write_timeout_);
    auto& r = *res;
    bhttp::async_write(stream_, r, [self = shared_from_this(), res, close](beast::error_code ec, std::size_t) {
        if (ec) {
            if (ec == beast::error::timeout) self->t_.timeouts_.at("write")->inc();
            return self->close_now();
        }
        if (close) return self->linger_close();
        self->wait_for_request();
    });
}

// Closes after an answer: no more is written, what the client still sends is dropped unparsed
// (kLinger, kLingerBytes), then the socket closes.
void Connection::linger_close() {
    state_ = State::closing;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    buffer_.clear();
    stream_.expires_after(kLinger);
    struct Drop {
        std::shared_ptr<Connection> self;
        void operator()(beast::error_code ec, std::size_t n) const {
            self->lingered_ += n;
            if (ec || self->lingered_ > kLingerBytes) return self->close_now();
            self->stream_.async_read_some(asio::buffer(self->drop_), *this);
        }
    };
    stream_.async_read_some(asio::buffer(drop_), Drop{shared_from_this()});
}

}  // namespace

SIGHTLINE_PLUGIN(transport, "http", HttpTransport)
