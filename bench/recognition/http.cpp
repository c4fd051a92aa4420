// The HTTP driver: starts `sightline serve` with an HTTP transport on a free 127.0.0.1 port and a
// fresh temporary gallery storage, uploads the gallery with PUT /v1/gallery/{id}, sends the queries
// with POST /v1/recognize (multipart field `image`) from the client threads, reads the server's
// peak RSS from /proc/<pid>/status and stops it with SIGTERM. The contract is DESIGN.md's HTTP API.
#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "bench.hpp"

namespace sightline::bench {

namespace {

int free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw std::runtime_error("socket() failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        ::close(fd);
        throw std::runtime_error("cannot find a free port on 127.0.0.1");
    }
    ::close(fd);
    return ntohs(a.sin_port);
}

std::string tail_of(const fs::path& file, std::size_t lines) {
    std::ifstream in(file);
    std::vector<std::string> all;
    for (std::string l; std::getline(in, l);) all.push_back(l);
    std::string out;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) out += "\n  | " + all[i];
    return out;
}

// Item ids are [A-Za-z0-9._-]: nothing to escape in a path segment.
std::string error_text(const httplib::Result& res) {
    if (!res) return "transport: " + httplib::to_string(res.error());
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_object())
        return j["error"].value("code", std::string("http_") + std::to_string(res->status)) + ": " +
               j["error"].value("message", std::string());
    return "http_" + std::to_string(res->status) + ": " + res->body.substr(0, 200);
}

class HttpDriver final : public Driver {
public:
    explicit HttpDriver(const Options& o) : options_(o), plugins_(plugin_dirs(o)) {
        bin_ = o.sightline_bin.empty() ? exe_dir() / "sightline" : fs::path(o.sightline_bin);
        if (::access(bin_.c_str(), X_OK) != 0)
            throw UsageError("--http: " + bin_.string() + " is not an executable (pass --sightline BIN)");
        // The same config the server will run, for the summary (and to fail early on a bad one).
        config_ = load_bench_config(o);
        if (!o.config_file.empty())
            config_path_ = fs::absolute(o.config_file).string();
        else if (fs::exists("config/default.yaml"))
            config_path_ = fs::absolute("config/default.yaml").string();
        temp_ = make_temp_dir("sightline-bench-http");
        try {
            start_server();
        } catch (...) {
            stop();
            throw;
        }
    }

    ~HttpDriver() override { stop(); }

    std::string name() const override { return "http"; }

    IngestStats ingest(const std::vector<GalleryEntry>& items, const Budget& budget) override {
        IngestStats s;
        s.attempted = items.size();
        std::mutex m;
        std::atomic<std::size_t> next{0}, stored{0};
        Progress bar("uploading gallery", items.size());
        const auto t0 = Clock::now();
        auto worker = [&] {
            auto cli = client();
            for (std::size_t i; (i = next++) < items.size() && !budget.expired();) {
                const auto& it = items[i];
                std::string reason;
                try {
                    Bytes image = read_file(it.file, kMaxImageBytes);
                    const std::string path = "/v1/gallery/" + it.id;
                    httplib::Result res = [&] {
                        if (it.metadata == "{}")
                            return cli->Put(path.c_str(), reinterpret_cast<const char*>(image.data()), image.size(),
                                            content_type_for(it.file).c_str());
                        httplib::MultipartFormDataItems form{
                            {"image", std::string(image.begin(), image.end()), it.file.filename().string(),
                             content_type_for(it.file)},
                            {"metadata", it.metadata, "", "application/json"}};
                        return cli->Put(path.c_str(), form);
                    }();
                    if (res && res->status >= 200 && res->status < 300)
                        ++stored;
                    else
                        reason = error_text(res);
                } catch (const std::exception& e) {
                    reason = e.what();
                }
                if (!reason.empty()) {
                    std::lock_guard lock(m);
                    ++s.failed;
                    s.failures.emplace_back(it.id, reason);
                }
                bar.tick();
            }
        };
        std::vector<std::thread> threads;
        for (std::size_t c = 0; c < options_.concurrency; ++c) threads.emplace_back(worker);
        for (auto& t : threads) t.join();
        s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
        s.stored = stored_ = stored.load();
        return s;
    }

    Outcome recognize(const QueryCase& q, std::size_t c) override {
        auto& cli = clients_.at(c);
        if (!cli) cli = client();
        httplib::MultipartFormDataItems form{
            {"image", std::string(q.image.begin(), q.image.end()), fs::path(q.name).filename().string(), q.content_type},
            {"client_id", "bench-" + std::to_string(c), "", ""}};
        Outcome out;
        const auto t0 = Clock::now();
        httplib::Result res = cli->Post("/v1/recognize", form);
        out.end_to_end_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        out.done = true;
        if (!res || res->status != 200) {
            out.error = error_text(res);
            return out;
        }
        auto j = nlohmann::json::parse(res->body, nullptr, false);
        if (!j.is_object()) {
            out.error = "bad_response: the body is not a JSON object";
            return out;
        }
        try {
            if (j.contains("matches") && j["matches"].is_array())
                for (const auto& m : j["matches"])
                    out.matches.push_back(
                        {m.value("id", std::string()), m.value("score", 0.0), m.value("inliers", 0)});
            if (j.contains("timings_ms") && j["timings_ms"].is_object())
                for (const auto& [k, v] : j["timings_ms"].items())
                    if (v.is_number()) out.timings_ms[k] = v.get<double>();
            if (j.contains("error") && !j["error"].is_null()) out.error = error_text(res);
        } catch (const std::exception& e) {
            out.error = std::string("bad_response: ") + e.what();
        }
        return out;
    }

    nlohmann::json config_summary() override {
        nlohmann::json s = summarize_config(config_, plugins_);
        s["server"] = bin_.string();
        s["listen"] = "127.0.0.1:" + std::to_string(port_);
        return s;
    }

    std::optional<std::uint64_t> peak_rss_bytes() override {
        if (pid_ > 0) peak_rss_ = vm_hwm_bytes(pid_);
        return peak_rss_;
    }
    std::string peak_rss_of() const override { return "server (sightline serve, VmHWM)"; }

    std::size_t gallery_size() override {
        if (gallery_size_) return *gallery_size_;
        if (pid_ <= 0) return 0;
        auto cli = client();
        auto res = cli->Get("/v1/gallery?limit=1");
        if (res && res->status == 200) {
            auto j = nlohmann::json::parse(res->body, nullptr, false);
            if (j.is_object() && j.contains("total") && j["total"].is_number_unsigned())
                gallery_size_ = j["total"].get<std::size_t>();
        }
        return gallery_size_.value_or(stored_);
    }

    void stop() override {
        if (pid_ > 0) {
            peak_rss_bytes();
            gallery_size();
            clients_.clear();
            ::kill(pid_, SIGTERM);
            int status = 0;
            bool exited = false;
            for (int i = 0; i < 300 && !exited; ++i) {  // 30 s for the drain
                if (::waitpid(pid_, &status, WNOHANG) == pid_) exited = true;
                else std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
            if (!exited) {
                note("the server did not stop within 30 s of SIGTERM; killing it");
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
            }
            pid_ = -1;
            g_child_pid.store(0);
        }
        if (!temp_.empty()) {
            std::error_code ec;
            if (options_.keep_temp)
                note("kept the server's storage and log in " + temp_.string());
            else
                fs::remove_all(temp_, ec);
            temp_.clear();
        }
    }

private:
    std::unique_ptr<httplib::Client> client() const {
        auto cli = std::make_unique<httplib::Client>("127.0.0.1", port_);
        cli->set_keep_alive(true);
        cli->set_connection_timeout(10, 0);
        cli->set_read_timeout(300, 0);
        cli->set_write_timeout(60, 0);
        return cli;
    }

    void start_server() {
        port_ = free_port();
        std::vector<std::string> args{bin_.string()};
        if (!config_path_.empty()) args.insert(args.end(), {"--config", config_path_});
        auto set = [&](const std::string& a) { args.insert(args.end(), {"--set", a}); };
        set("logging.level=info");  // into the server log file
        for (const auto& s : options_.overrides) set(s);
        std::vector<std::string> dirs;
        for (const auto& d : plugins_) dirs.push_back(d.string());
        set("plugins.paths=" + nlohmann::json(dirs).dump());
        set("storages." + gallery_storage_name(config_) + ".root=" + nlohmann::json((temp_ / "gallery").string()).dump());
        set("transports=[{type: http, listen: \"127.0.0.1:" + std::to_string(port_) + "\"}]");
        if (!options_.keep_sinks) set("sinks=[]");
        args.push_back("serve");
        log_ = temp_ / "server.log";

        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        const pid_t parent = ::getpid();
        pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed");
        if (pid == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the bench
            if (::getppid() != parent) ::_exit(127);
            int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                ::dup2(fd, 1);
                ::dup2(fd, 2);
                ::close(fd);
            }
            int null = ::open("/dev/null", O_RDONLY);
            if (null >= 0) ::dup2(null, 0);
            if (::chdir(temp_.c_str()) != 0) ::_exit(127);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        pid_ = pid;
        g_child_pid.store(pid);
        std::string cmd;
        for (const auto& a : args) {
            bool plain = a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,") ==
                         std::string::npos;
            std::string q = a;
            if (!plain) {
                q = "'";
                for (char ch : a) q += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
                q += "'";
            }
            cmd += (cmd.empty() ? "" : " ") + q;
        }
        note("server: " + cmd);

        // Ready when /readyz answers 200 (the gallery is loaded; empty here, so that is quick).
        auto cli = client();
        cli->set_connection_timeout(1, 0);
        cli->set_read_timeout(5, 0);
        const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(options_.ready_timeout_s));
        for (;;) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                g_child_pid.store(0);
                throw std::runtime_error("the server exited before it was ready (" +
                                         (WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                                            : "signal " + std::to_string(WTERMSIG(status))) +
                                         "); its log:" + tail_of(log_, 20));
            }
            auto res = cli->Get("/readyz");
            if (res && res->status == 200) break;
            if (Clock::now() > deadline || g_interrupted)
                throw std::runtime_error("the server did not answer /readyz with 200 within " +
                                         std::to_string(options_.ready_timeout_s) + " s; its log:" + tail_of(log_, 20));
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        clients_.resize(options_.concurrency);
        note("server ready on 127.0.0.1:" + std::to_string(port_) + " (pid " + std::to_string(pid_) + ")");
    }

    const Options& options_;
    std::vector<fs::path> plugins_;
    host::LoadedConfig config_;
    fs::path bin_, temp_, log_;
    std::string config_path_;
    int port_ = 0;
    pid_t pid_ = -1;
    std::optional<std::uint64_t> peak_rss_;
    std::optional<std::size_t> gallery_size_;
    std::size_t stored_ = 0;  // successful uploads, when GET /v1/gallery gives no total
    std::vector<std::unique_ptr<httplib::Client>> clients_;
};

}  // namespace

bool http_driver_available() { return true; }

std::unique_ptr<Driver> make_http_driver(const Options& o) { return std::make_unique<HttpDriver>(o); }

}  // namespace sightline::bench
