#pragma once
// Small helpers shared by the test executables: unique temp directories, file I/O, paths of the
// build's plugins and the demo gallery, and a Host built from a config written to disk.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sightline/context.hpp>
#include <sightline/error.hpp>
#include <sightline/storage.hpp>

#include "sightline/host/host.hpp"
#include "sightline/host/metrics_registry.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace sightline::test {

namespace fs = std::filesystem;

// A Context for constructing one plugin directly, without a Host: config, a logger, metrics, and
// no storages.
class MinimalContext final : public Context {
public:
    explicit MinimalContext(Config config, std::string logger_name = "test")
        : config_(std::move(config)), logger_name_(std::move(logger_name)) {}
    const Config& config() const override { return config_; }
    std::shared_ptr<spdlog::logger> logger() const override { return host::make_logger(logger_name_); }
    Metrics& metrics() const override { return metrics_; }
    std::shared_ptr<Storage> storage(const std::string& name) const override {
        throw Error(ErrorCode::not_found, "no storage named '" + name + "' in this test");
    }

private:
    Config config_;
    std::string logger_name_;
    mutable host::MetricsRegistry metrics_;
};

inline fs::path plugin_dir() { return SIGHTLINE_TEST_PLUGIN_DIR; }
inline fs::path fixture_good_dir() { return SIGHTLINE_TEST_FIXTURE_GOOD_DIR; }
inline fs::path fixture_bad_dir() { return SIGHTLINE_TEST_FIXTURE_BAD_DIR; }
inline fs::path source_dir() { return SIGHTLINE_SOURCE_DIR; }
inline fs::path gallery_images_dir() { return source_dir() / "examples" / "gallery" / "images"; }

// A fresh directory, removed with everything in it when the object goes. mkdtemp makes the name
// unique, so tests can run in parallel (ctest -j).
class TempDir {
public:
    explicit TempDir(const std::string& tag = "sightline-test") {
        std::string pattern = (fs::temp_directory_path() / (tag + "-XXXXXX")).string();
        std::vector<char> buf(pattern.begin(), pattern.end());
        buf.push_back('\0');
        if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
        path_ = buf.data();
    }
    ~TempDir() {
        std::error_code ec;
        // Make everything writable again in case a test removed permissions.
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const fs::path& path() const { return path_; }
    fs::path operator/(const std::string& rel) const { return path_ / rel; }

private:
    fs::path path_;
};

inline Bytes read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + p.string());
    return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline std::string read_text(const fs::path& p) {
    Bytes b = read_bytes(p);
    return std::string(b.begin(), b.end());
}

inline void write_bytes(const fs::path& p, const Bytes& b) {
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

inline void write_text(const fs::path& p, const std::string& s) { write_bytes(p, Bytes(s.begin(), s.end())); }

inline Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// The demo gallery's JPEGs (720x360 photos), sorted by name.
inline std::vector<fs::path> gallery_images() {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(gallery_images_dir()))
        if (e.path().extension() == ".jpg") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
}

// Runs f and returns the sightline::Error it throws; fails the test if it throws nothing or
// something else.
inline Error capture_error(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "expected sightline::Error, got std::exception: " << e.what();
        return Error(ErrorCode::internal, std::string("<wrong exception> ") + e.what());
    }
    ADD_FAILURE() << "expected sightline::Error, nothing was thrown";
    return Error(ErrorCode::internal, "<nothing thrown>");
}

// Quotes a path for a YAML flow scalar.
// A shell command's exit status and standard output (append " 2>&1" for standard error too).
struct ShellRun {
    int status = -1;
    std::string out;
};
inline ShellRun run_shell(const std::string& command) {
    ShellRun r;
    FILE* p = ::popen(command.c_str(), "r");
    if (!p) return r;
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

// `s` quoted for /bin/sh.
inline std::string sh_quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

inline std::string yq(const fs::path& p) { return "\"" + p.string() + "\""; }

}  // namespace sightline::test
