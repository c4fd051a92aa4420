// transport-http: the JSON HTTP API of DESIGN.md (docs/api.md) on cpp-httplib's server.
//
// Threads: cpp-httplib accepts on one thread and serves each connection on a pool of `threads`
// workers, one request at a time per connection; a handler blocks on Service::recognize, so
// `threads` bounds the synchronous recognitions in flight from this transport.
// Bodies: POST and PUT handlers read the body themselves (cpp-httplib's content readers), so every
// byte kept is counted against limits.max_body_bytes, chunked bodies included.
// Parsing of what a request carried lives in request_parsing.cpp (no sockets; fuzzed).
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <sightline/plugin.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

#include "request_parsing.hpp"
#include "responses.hpp"

namespace {

using namespace sightline;
using namespace sightline::http;
using Clock = std::chrono::steady_clock;

// A multipart upload may exceed limits.max_body_bytes by this much: the gallery's metadata field,
// client fields and the multipart framing. The image itself is held to max_body_bytes.
constexpr std::uint64_t kEnvelopeBytes = (1u << 20) + (64u << 10);
constexpr std::size_t kMaxParts = 40;

// Every route, for metrics labels, the access log and 405 answers.
struct Route {
    const char* method;
    const char* label;  // "GET /v1/gallery/{id}"
    const char* pattern;
};
constexpr std::array<Route, 11> kRoutes{{
    {"GET", "GET /healthz", "/healthz"},
    {"GET", "GET /readyz", "/readyz"},
    {"GET", "GET /metrics", "/metrics"},
    {"POST", "POST /v1/recognize", "/v1/recognize"},
    {"POST", "POST /v1/requests", "/v1/requests"},
    {"GET", "GET /v1/requests/{id}", "/v1/requests/([^/]+)"},
    {"GET", "GET /v1/gallery", "/v1/gallery"},
    {"GET", "GET /v1/gallery/{id}", "/v1/gallery/([^/]+)"},
    {"GET", "GET /v1/gallery/{id}/metadata", "/v1/gallery/([^/]+)/metadata"},
    {"PUT", "PUT /v1/gallery/{id}", "/v1/gallery/([^/]+)"},
    {"DELETE", "DELETE /v1/gallery/{id}", "/v1/gallery/([^/]+)"},
}};
constexpr const char* kUnmatched = "unmatched";

// The exchange the calling worker thread is serving (one request at a time per thread).
struct Exchange {
    Clock::time_point start{};
    bool started = false;
    const char* route = nullptr;
    std::string request_id;
};
thread_local Exchange t_exchange;

void begin_exchange() {
    t_exchange.start = Clock::now();
    t_exchange.started = true;
    t_exchange.route = nullptr;
    t_exchange.request_id.clear();
}

void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, int status, std::string_view code, std::string_view message,
                std::string_view request_id = {}) {
    if (status == 503 && !res.has_header("Retry-After")) res.set_header("Retry-After", "1");
    send_json(res, status, error_json(code, message, request_id));
}

[[noreturn]] void fail(int status, std::string code, const std::string& message) {
    throw RequestError(status, std::move(code), message);
}

// A sightline::Error from the service as an HTTP answer.
[[noreturn]] void fail_service(const Error& e, bool exhausted_is_queue) {
    fail(status_for(e.code(), exhausted_is_queue), to_string(e.code()), e.what());
}

bool is_chunked(const httplib::Request& req) {
    std::string te = req.get_header_value("Transfer-Encoding");
    std::transform(te.begin(), te.end(), te.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return te.find("chunked") != std::string::npos;
}

// Reads a POST/PUT body through cpp-httplib's content reader, counting every byte kept.
class BodyReader {
public:
    using PartCap = std::function<std::uint64_t(const std::string& part_name)>;

    BodyReader(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& reader,
               std::uint64_t max_body_bytes)
        : req_(req), res_(res), reader_(reader), max_body_bytes_(max_body_bytes) {}

    bool consumed() const { return consumed_; }

    Upload read(const PartCap& part_cap) {
        consumed_ = true;
        Upload up;
        up.content_type = req_.get_header_value("Content-Type");
        for (const auto& [k, v] : req_.params) up.query.emplace_back(k, v);
        // HTTP/1.1: a request with neither Content-Length nor chunked encoding has no body.
        if (!req_.has_header("Content-Length") && !is_chunked(req_)) {
            up.multipart = req_.is_multipart_form_data();
            return up;
        }
        // Past a limit the rest is read and dropped (up to the payload limit), so that the client
        // can finish sending and read the 413; beyond that the connection is given up.
        std::string overflow;
        std::uint64_t total = 0;
        const std::uint64_t drain_limit = max_body_bytes_ + kEnvelopeBytes;
        auto keep_going = [&](std::size_t n) {
            total += n;
            return total <= drain_limit;
        };
        bool ok = false;
        if (req_.is_multipart_form_data()) {
            up.multipart = true;
            ok = reader_(
                [&](const httplib::MultipartFormData& header) {
                    if (!overflow.empty()) return true;
                    if (up.parts.size() >= kMaxParts) {
                        overflow = "the multipart body has more than " + std::to_string(kMaxParts) + " fields";
                        return true;
                    }
                    up.parts.push_back({header.name, header.filename, header.content_type, {}});
                    return true;
                },
                [&](const char* data, std::size_t n) {
                    if (!keep_going(n)) return false;
                    if (!overflow.empty() || up.parts.empty()) return true;
                    FormPart& p = up.parts.back();
                    const std::uint64_t cap = part_cap(p.name);
                    if (p.content.size() + n > cap) {
                        overflow = "multipart field '" + p.name.substr(0, 64) + "' is over its limit of " +
                                   std::to_string(cap) + " bytes" +
                                   (p.name == "image" ? " (limits.max_body_bytes)" : "");
                        up.parts.clear();
                        return true;
                    }
                    p.content.append(data, n);
                    return true;
                });
        } else {
            ok = reader_([&](const char* data, std::size_t n) {
                if (!keep_going(n)) return false;
                if (!overflow.empty()) return true;
                if (up.body.size() + n > max_body_bytes_) {
                    overflow = "the request body is over the limit of " + std::to_string(max_body_bytes_) +
                               " bytes (limits.max_body_bytes)";
                    up.body.clear();
                    up.body.shrink_to_fit();
                    return true;
                }
                up.body.append(data, n);
                return true;
            });
        }
        if (!ok && total > drain_limit) {
            // The rest of the body is still on the connection: the client must not reuse it.
            res_.set_header("Connection", "close");
            fail(413, "resource_exhausted",
                 overflow.empty() ? "the request body is over the limit of " + std::to_string(max_body_bytes_) +
                                        " bytes (limits.max_body_bytes)"
                                  : overflow);
        }
        if (!overflow.empty()) fail(413, "resource_exhausted", overflow);
        if (!ok && res_.status == 413) {
            fail(413, "resource_exhausted",
                 "the request body is " + req_.get_header_value("Content-Length") + " bytes, over the limit of " +
                     std::to_string(max_body_bytes_) + " (limits.max_body_bytes; multipart uploads may add " +
                     std::to_string(kEnvelopeBytes) + " bytes of fields and framing)");
        }
        if (!ok)
            fail(400, "invalid_argument",
                 up.multipart ? "the multipart/form-data body is malformed or cut short"
                              : "the request body could not be read (cut short, or too slow: see read_timeout)");
        return up;
    }

    // Reads and drops a body the handler refused before reading it, so the connection stays usable.
    void discard(std::uint64_t at_most) {
        consumed_ = true;
        if (!req_.has_header("Content-Length") && !is_chunked(req_)) return;
        std::uint64_t seen = 0;
        auto count = [&](const char*, std::size_t n) {
            seen += n;
            return seen <= at_most;
        };
        const int status = res_.status;
        bool ok = req_.is_multipart_form_data() ? reader_([](const httplib::MultipartFormData&) { return true; }, count)
                                                : reader_(count);
        res_.status = status;  // the reader reports its own failures in res.status; the answer is already set
        if (!ok) res_.set_header("Connection", "close");
    }

private:
    const httplib::Request& req_;
    httplib::Response& res_;
    const httplib::ContentReader& reader_;
    std::uint64_t max_body_bytes_;
    bool consumed_ = false;
};

class HttpTransport final : public Transport {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description =
        "HTTP/1.1 JSON API: recognition (sync and queue-and-poll), gallery changes, health, readiness, metrics";
    static ConfigSchema config_schema() {
        static const std::array<ConfigKey, 7> keys{{
            {.name = "listen", .type = ConfigType::string, .default_value = "127.0.0.1:8080",
             .description = "address:port to listen on ([v6addr]:port for IPv6, :port for every address); port 0 "
                            "picks a free port and logs it"},
            {.name = "threads", .type = ConfigType::integer, .default_value = "8", .min = 1, .max = 1024,
             .description = "worker threads serving connections (bounds the requests handled at once)"},
            {.name = "read_timeout", .type = ConfigType::duration, .default_value = "10s", .min = 1, .max = 3600000,
             .description = "a client that sends nothing for this long is disconnected"},
            {.name = "write_timeout", .type = ConfigType::duration, .default_value = "10s", .min = 1, .max = 3600000,
             .description = "a client that reads nothing of the answer for this long is disconnected"},
            {.name = "token", .type = ConfigType::string, .default_value = "",
             .description = "bearer token required by PUT and DELETE /v1/gallery/{id}; give it as ${SIGHTLINE_TOKEN} "
                            "(secrets come from the environment only); empty: no token needed"},
            {.name = "max_page", .type = ConfigType::integer, .default_value = "1000", .min = 1, .max = 1000000,
             .description = "largest page GET /v1/gallery returns (its limit parameter is capped at this)"},
            {.name = "access_log", .type = ConfigType::boolean, .default_value = "true",
             .description = "log one line per request: method, path, status, request bytes, milliseconds, request id"},
        }};
        return keys;
    }

    explicit HttpTransport(Context& ctx)
        : log_(ctx.logger()),
          metrics_(ctx.metrics()),
          listen_text_(ctx.config().get_string("listen")),
          threads_(static_cast<std::size_t>(ctx.config().get_int("threads"))),
          read_timeout_(ctx.config().get_duration("read_timeout")),
          write_timeout_(ctx.config().get_duration("write_timeout")),
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
    }

    ~HttpTransport() override { stop(std::chrono::milliseconds(0)); }

    void start(Service& service) override {
        std::lock_guard lock(lifecycle_);
        if (listener_.joinable()) throw Error(ErrorCode::internal, "transport-http: start() called twice");
        service_ = &service;
        const ServiceLimits limits = service.limits();
        max_body_bytes_ = limits.max_body_bytes;
        parse_limits_.max_image_bytes = limits.max_body_bytes;
        server_ = std::make_unique<httplib::Server>();
        configure(*server_);

        errno = 0;
        bool bound = false;
        if (listen_.port == 0) {
            const int port = server_->bind_to_any_port(listen_.host);
            bound = port > 0;
            port_ = port;
        } else {
            bound = server_->bind_to_port(listen_.host, listen_.port);
            port_ = listen_.port;
        }
        const int err = errno;
        if (!bound) {
            server_.reset();
            std::string why = err ? std::strerror(err) : "the address cannot be bound";
            if (err == EADDRINUSE) why += " (another process listens there: choose another port in `listen`)";
            throw Error(ErrorCode::unavailable, "transport-http: cannot listen on " + listen_text_ + ": " + why);
        }
        auto done = std::make_shared<std::promise<void>>();
        listener_done_ = done->get_future();
        listener_ = std::thread([this, done] {
            try {
                if (!server_->listen_after_bind()) log_->error("the listening socket failed; no new connections");
            } catch (const std::exception& e) {
                log_->error("the HTTP server stopped: {}", e.what());
            }
            done->set_value();
        });
        // Return once accepting, so that stop() can always stop it.
        while (!server_->is_running()) {
            if (listener_done_.wait_for(std::chrono::milliseconds(1)) == std::future_status::ready) {
                listener_.join();
                server_.reset();
                throw Error(ErrorCode::unavailable, "transport-http: the server on " + listen_text_ + " stopped at once");
            }
        }
        log_->info("listening on http://{}:{} ({} threads; bearer token for gallery changes: {})",
                   listen_.host.find(':') != std::string::npos ? "[" + listen_.host + "]" : listen_.host, port_,
                   threads_, token_.empty() ? "not required" : "required");
        if (token_.empty() && listen_.host != "127.0.0.1" && listen_.host != "::1" && listen_.host != "localhost")
            log_->warn("no token is configured: anyone who reaches {} can change the gallery (set token: "
                       "${{SIGHTLINE_TOKEN}})",
                       listen_text_);
    }

    void stop(std::chrono::milliseconds drain_deadline) override {
        std::lock_guard lock(lifecycle_);
        if (!listener_.joinable()) return;
        log_->info("stopping: no new connections; in-flight requests get up to {} ms", drain_deadline.count());
        server_->stop();  // closes the listening socket; the pool finishes the requests it is serving
        if (listener_done_.wait_for(drain_deadline) != std::future_status::ready)
            log_->warn("requests are still running after the drain deadline; waiting for them (each ends within "
                       "read_timeout, write_timeout or limits.request_timeout)");
        listener_.join();
        server_.reset();
        log_->info("stopped");
    }

private:
    void configure(httplib::Server& svr) {
        const auto seconds = [](std::chrono::milliseconds d) { return static_cast<time_t>(d.count() / 1000); };
        const auto micros = [](std::chrono::milliseconds d) { return static_cast<time_t>((d.count() % 1000) * 1000); };
        svr.set_read_timeout(seconds(read_timeout_), micros(read_timeout_));
        svr.set_write_timeout(seconds(write_timeout_), micros(write_timeout_));
        svr.set_keep_alive_timeout(std::clamp<time_t>(seconds(read_timeout_), 1, 5));
        svr.set_keep_alive_max_count(100);
        svr.set_payload_max_length(static_cast<std::size_t>(max_body_bytes_ + kEnvelopeBytes));
        svr.set_tcp_nodelay(true);
        // SO_REUSEADDR only: cpp-httplib's default adds SO_REUSEPORT, which would let a second server
        // bind the same port silently.
        svr.set_socket_options([](socket_t sock) {
            int yes = 1;
            ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        });
        const std::size_t threads = threads_;
        svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

        svr.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
            begin_exchange();
            return httplib::Server::HandlerResponse::Unhandled;
        });
        svr.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
            return expect_continue(req, res);
        });
        svr.set_error_handler(httplib::Server::HandlerWithResponse(
            [this](const httplib::Request& req, httplib::Response& res) {
                if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours already
                library_error(req, res);
                return httplib::Server::HandlerResponse::Handled;
            }));
        svr.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
            std::string what = "unknown exception";
            try {
                if (ep) std::rethrow_exception(ep);
            } catch (const std::exception& e) {
                what = e.what();
            } catch (...) {
            }
            log_->error("{} {}: {}", req.method, req.path, what);
            send_error(res, 500, "internal", "internal error");
        });
        // Runs for every answer just before it is written: metrics and the access log.
        svr.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) { observe(req, res); });

        svr.Get("/healthz", guarded("GET /healthz", [](const httplib::Request&, httplib::Response& res) {
            send_json(res, 200, {{"status", "ok"}});
        }));
        svr.Get("/readyz", guarded("GET /readyz", [this](const httplib::Request&, httplib::Response& res) {
            if (service_->ready())
                send_json(res, 200, {{"ready", true}});
            else
                send_error(res, 503, "unavailable", "the gallery is still loading");
        }));
        svr.Get("/metrics", guarded("GET /metrics", [this](const httplib::Request&, httplib::Response& res) {
            res.status = 200;
            res.set_content(service_->metrics_text(), "text/plain; version=0.0.4; charset=utf-8");
        }));
        svr.Post("/v1/recognize", with_body("POST /v1/recognize", [this](const httplib::Request& req,
                                                                         httplib::Response& res, BodyReader& body) {
            recognize(req, res, body, false);
        }));
        svr.Post("/v1/requests", with_body("POST /v1/requests", [this](const httplib::Request& req,
                                                                       httplib::Response& res, BodyReader& body) {
            recognize(req, res, body, true);
        }));
        svr.Get("/v1/requests/([^/]+)", guarded("GET /v1/requests/{id}", [this](const httplib::Request& req,
                                                                                httplib::Response& res) {
            request_status(req, res);
        }));
        svr.Get("/v1/gallery", guarded("GET /v1/gallery", [this](const httplib::Request& req, httplib::Response& res) {
            gallery_list(req, res);
        }));
        svr.Get("/v1/gallery/([^/]+)/metadata",
                guarded("GET /v1/gallery/{id}/metadata", [this](const httplib::Request& req, httplib::Response& res) {
                    gallery_get(req, res, true);
                }));
        svr.Get("/v1/gallery/([^/]+)", guarded("GET /v1/gallery/{id}", [this](const httplib::Request& req,
                                                                              httplib::Response& res) {
            gallery_get(req, res, false);
        }));
        svr.Put("/v1/gallery/([^/]+)", with_body("PUT /v1/gallery/{id}", [this](const httplib::Request& req,
                                                                                httplib::Response& res,
                                                                                BodyReader& body) {
            gallery_put(req, res, body);
        }));
        svr.Delete("/v1/gallery/([^/]+)", guarded("DELETE /v1/gallery/{id}", [this](const httplib::Request& req,
                                                                                    httplib::Response& res) {
            gallery_delete(req, res);
        }));
    }

    // ---------------------------------------------------------------- handler plumbing

    template <class F> void run_guarded(const httplib::Request& req, httplib::Response& res, F&& f) {
        try {
            f();
        } catch (const RequestError& e) {
            send_error(res, e.status(), e.code(), e.what(), t_exchange.request_id);
        } catch (const Error& e) {
            send_error(res, status_for(e.code(), true), to_string(e.code()), e.what(), t_exchange.request_id);
        } catch (const std::exception& e) {
            log_->error("{} {}: {}", req.method, req.path, e.what());
            send_error(res, 500, "internal", "internal error", t_exchange.request_id);
        }
    }

    template <class F> httplib::Server::Handler guarded(const char* route, F f) {
        return [this, route, f](const httplib::Request& req, httplib::Response& res) {
            t_exchange.route = route;
            run_guarded(req, res, [&] { f(req, res); });
        };
    }

    template <class F> httplib::Server::HandlerWithContentReader with_body(const char* route, F f) {
        return [this, route, f](const httplib::Request& req, httplib::Response& res,
                                const httplib::ContentReader& reader) {
            t_exchange.route = route;
            BodyReader body(req, res, reader, max_body_bytes_);
            run_guarded(req, res, [&] { f(req, res, body); });
            if (!body.consumed()) body.discard(max_body_bytes_ + kEnvelopeBytes);
        };
    }

    // Refuses before the body is sent when the client asked first (Expect: 100-continue).
    int expect_continue(const httplib::Request& req, httplib::Response& res) {
        begin_exchange();
        const std::uint64_t length = req.get_header_value<std::uint64_t>("Content-Length");
        if (length > max_body_bytes_ + kEnvelopeBytes) {
            res.set_header("Connection", "close");
            send_error(res, 413, "resource_exhausted",
                       "the request body is " + std::to_string(length) + " bytes, over the limit of " +
                           std::to_string(max_body_bytes_) + " (limits.max_body_bytes)");
            return 413;
        }
        if (req.method == "PUT" && req.path.rfind("/v1/gallery/", 0) == 0) {
            try {
                authorize(req, res);
            } catch (const RequestError& e) {
                res.set_header("Connection", "close");
                send_error(res, e.status(), e.code(), e.what());
                return e.status();
            }
        }
        return 100;
    }

    // Answers cpp-httplib produced itself (no route, body over the limit, malformed request).
    void library_error(const httplib::Request& req, httplib::Response& res) {
        switch (res.status) {
            case 404: {
                std::string allowed;
                for (std::size_t i = 0; i < kRoutes.size(); ++i)
                    if (std::regex_match(req.path, route_regex_[i]) &&
                        allowed.find(kRoutes[i].method) == std::string::npos)
                        allowed += (allowed.empty() ? "" : ", ") + std::string(kRoutes[i].method);
                if (!allowed.empty()) {
                    res.set_header("Allow", allowed);
                    send_error(res, 405, "unsupported", req.method + " is not allowed on " + req.path + " (allowed: " +
                                                            allowed + ")");
                } else {
                    send_error(res, 404, "not_found", "no such endpoint: " + req.method + " " + req.path +
                                                          " (see docs/api.md)");
                }
                return;
            }
            case 413:
                if (req.get_header_value("Content-Type").rfind("application/x-www-form-urlencoded", 0) == 0)
                    send_error(res, 413, "resource_exhausted",
                               "application/x-www-form-urlencoded bodies are limited to 8192 bytes, and an image is "
                               "not form data: send it with Content-Type image/jpeg (curl -H 'Content-Type: "
                               "image/jpeg' --data-binary @photo.jpg) or as multipart (curl -F image=@photo.jpg)");
                else
                    send_error(res, 413, "resource_exhausted",
                               "the request body is over the limit of " + std::to_string(max_body_bytes_) +
                                   " bytes (limits.max_body_bytes)");
                return;
            case 400: send_error(res, 400, "invalid_argument", "malformed HTTP request"); return;
            case 414: send_error(res, 414, "invalid_argument", "the request line is too long"); return;
            default:
                send_error(res, res.status, res.status >= 500 ? "internal" : "invalid_argument",
                           "the request failed with HTTP status " + std::to_string(res.status));
        }
    }

    void observe(const httplib::Request& req, const httplib::Response& res) {
        const char* route = t_exchange.route ? t_exchange.route : classify(req);
        const double seconds =
            t_exchange.started ? std::chrono::duration<double>(Clock::now() - t_exchange.start).count() : 0.0;
        requests_counter(route, res.status).inc();
        if (auto it = latency_.find(route); it != latency_.end() && t_exchange.started) it->second->observe(seconds);
        if (access_log_) {
            const std::string length = req.get_header_value("Content-Length");
            const std::string id = t_exchange.request_id.empty() ? "-" : t_exchange.request_id;
            if (t_exchange.started)
                log_->info("{} {} {} {}B {:.1f}ms id={}", req.method, req.path, res.status,
                           length.empty() ? std::to_string(req.body.size()) : length, seconds * 1000.0, id);
            else
                log_->info("{} {} {} {}B -ms id={}", req.method, req.path, res.status,
                           length.empty() ? std::to_string(req.body.size()) : length, id);
        }
        t_exchange.started = false;
        t_exchange.route = nullptr;
        t_exchange.request_id.clear();
    }

    const char* classify(const httplib::Request& req) const {
        const std::string method = req.method == "HEAD" ? "GET" : req.method;
        for (std::size_t i = 0; i < kRoutes.size(); ++i)
            if (method == kRoutes[i].method && std::regex_match(req.path, route_regex_[i])) return kRoutes[i].label;
        return kUnmatched;
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
    void authorize(const httplib::Request& req, httplib::Response& res) const {
        if (token_.empty()) return;
        const std::string header = req.get_header_value("Authorization");
        auto given = bearer_token(header);
        if (!given) {
            res.set_header("WWW-Authenticate", "Bearer realm=\"sightline\"");
            fail(401, "unauthenticated", "this call needs an Authorization: Bearer <token> header");
        }
        if (!constant_time_equal(*given, token_)) {
            res.set_header("WWW-Authenticate", "Bearer realm=\"sightline\", error=\"invalid_token\"");
            fail(401, "unauthenticated", "the bearer token is not valid");
        }
    }

    static std::string item_id(const httplib::Request& req) {
        std::string id = req.matches.size() > 1 ? req.matches[1].str() : std::string();
        if (auto why = invalid_item_id_reason(id)) fail(400, "invalid_argument", "invalid gallery item id: " + *why);
        return id;
    }

    // ---------------------------------------------------------------- endpoints

    void recognize(const httplib::Request& req, httplib::Response& res, BodyReader& body, bool queued) {
        if (!service_->ready()) fail(503, "unavailable", "the gallery is still loading; retry when GET /readyz is 200");
        std::string id;
        if (req.has_header("X-Request-Id")) {
            id = req.get_header_value("X-Request-Id");
            if (auto why = invalid_request_id_reason(id)) fail(400, "invalid_argument", "X-Request-Id: " + *why);
        }
        Upload upload = body.read([this](const std::string& name) -> std::uint64_t {
            return name == "image" ? max_body_bytes_ : parse_limits_.max_field_bytes;
        });
        Request request = parse_recognize(upload, parse_limits_);
        upload = {};
        request.id = id;
        t_exchange.request_id = id;
        if (queued) {
            std::string assigned;
            try {
                assigned = service_->submit(std::move(request));
            } catch (const Error& e) {
                fail_service(e, true);
            }
            t_exchange.request_id = assigned;
            res.set_header("X-Request-Id", assigned);
            res.set_header("Location", "/v1/requests/" + assigned);
            send_json(res, 202, {{"request_id", assigned}});
            return;
        }
        Result result;
        try {
            result = service_->recognize(std::move(request));
        } catch (const Error& e) {
            fail_service(e, true);
        }
        t_exchange.request_id = result.request_id;
        res.set_header("X-Request-Id", result.request_id);
        if (result.error)
            send_error(res, status_for(result.error->code, false), result.error->code, result.error->message,
                       result.request_id);
        else
            send_json(res, 200, result_json(result));
    }

    void request_status(const httplib::Request& req, httplib::Response& res) {
        const std::string id = req.matches[1].str();
        if (auto why = invalid_request_id_reason(id)) fail(400, "invalid_argument", *why);
        t_exchange.request_id = id;
        RequestStatus s = service_->status(id);
        switch (s.state) {
            case RequestState::unknown:
                fail(404, "not_found", "no request '" + id + "' (never submitted, or its result expired: limits.results_ttl)");
            case RequestState::pending: send_json(res, 200, {{"request_id", id}, {"state", "pending"}}); return;
            case RequestState::done: {
                nlohmann::json j{{"request_id", id}, {"state", "done"}};
                j["result"] = s.result ? result_json(*s.result) : nlohmann::json::object();
                send_json(res, 200, j);
                return;
            }
        }
    }

    void gallery_list(const httplib::Request& req, httplib::Response& res) {
        QueryParams query(req.params.begin(), req.params.end());
        ListQuery q = parse_list_query(query, max_page_);
        GalleryPage page = service_->list_items(q.after, q.limit);
        send_json(res, 200,
                  {{"items", page.ids},
                   {"total", page.total},
                   {"next_after", page.next_after.empty() ? nlohmann::json(nullptr) : nlohmann::json(page.next_after)}});
    }

    void gallery_get(const httplib::Request& req, httplib::Response& res, bool metadata_only) {
        const std::string id = item_id(req);
        auto item = service_->get_item(id);
        if (!item) fail(404, "not_found", "no gallery item '" + id + "'");
        res.status = 200;
        if (metadata_only)
            res.set_content(item->metadata_json, "application/json");
        else
            res.set_content(reinterpret_cast<const char*>(item->image.data()), item->image.size(), item->content_type);
    }

    void gallery_put(const httplib::Request& req, httplib::Response& res, BodyReader& body) {
        authorize(req, res);
        const std::string id = item_id(req);
        Upload upload = body.read([this](const std::string& name) -> std::uint64_t {
            if (name == "image") return max_body_bytes_;
            if (name == "metadata") return parse_limits_.max_metadata_bytes;
            return parse_limits_.max_field_bytes;
        });
        GalleryUpload g = parse_gallery_upload(upload, parse_limits_);
        upload = {};
        bool existed = false;
        try {
            existed = service_->get_item(id).has_value();
            service_->put_item(id, g.image, g.metadata_json);
        } catch (const Error& e) {
            fail_service(e, false);
        }
        res.set_header("Location", "/v1/gallery/" + id);
        send_json(res, existed ? 200 : 201, {{"id", id}, {"created", !existed}});
    }

    void gallery_delete(const httplib::Request& req, httplib::Response& res) {
        authorize(req, res);
        const std::string id = item_id(req);
        bool removed = false;
        try {
            removed = service_->remove_item(id);
        } catch (const Error& e) {
            fail_service(e, false);
        }
        if (!removed) fail(404, "not_found", "no gallery item '" + id + "'");
        res.status = 204;
    }

    std::shared_ptr<spdlog::logger> log_;
    Metrics& metrics_;
    std::string listen_text_;
    ListenAddress listen_;
    std::size_t threads_;
    std::chrono::milliseconds read_timeout_, write_timeout_;
    std::string token_;
    std::size_t max_page_;
    bool access_log_;

    std::map<std::string, Histogram*> latency_;
    std::vector<std::regex> route_regex_;
    std::mutex counters_mutex_;
    std::map<std::pair<std::string, int>, Counter*> counters_;

    Service* service_ = nullptr;
    std::uint64_t max_body_bytes_ = 0;
    ParseLimits parse_limits_;
    int port_ = 0;

    std::mutex lifecycle_;
    std::unique_ptr<httplib::Server> server_;
    std::thread listener_;
    std::future<void> listener_done_;
};

}  // namespace

SIGHTLINE_PLUGIN(transport, "http", HttpTransport)
