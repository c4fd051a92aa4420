#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>

#include "bench_common.hpp"

namespace sightline::bench {

void note(const std::string& line) { std::cerr << "bench: " << line << "\n" << std::flush; }

void log_to_stderr(const std::string& name) { spdlog::set_default_logger(spdlog::stderr_color_mt(name)); }

static std::string lower_ext(const fs::path& p) {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return ext;
}

std::string content_type_for(const fs::path& p) {
    std::string ext = lower_ext(p);
    if (ext == ".png") return "image/png";
    if (ext == ".webp") return "image/webp";
    if (ext == ".bmp") return "image/bmp";
    return "image/jpeg";
}

std::optional<std::uint64_t> proc_status_bytes(const char* field, long pid) {
    std::ifstream in(pid ? "/proc/" + std::to_string(pid) + "/status" : std::string("/proc/self/status"));
    const std::size_t n = std::strlen(field);
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, n, field) != 0 || line.size() <= n || line[n] != ':') continue;
        std::uint64_t kb = 0;
        if (std::sscanf(line.c_str() + n + 1, "%lu", &kb) == 1) return kb * 1024;
    }
    return std::nullopt;
}

fs::path exe_dir() {
    std::error_code ec;
    fs::path p = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return fs::current_path();
    return p.parent_path();
}

fs::path make_temp_dir(const std::string& prefix) {
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
        char name[64];
        std::snprintf(name, sizeof name, "%s-%d-%08x", prefix.c_str(), static_cast<int>(::getpid()), rd());
        fs::path p = fs::temp_directory_path() / name;
        std::error_code ec;
        if (fs::create_directory(p, ec)) return p;
    }
    throw std::runtime_error("cannot create a temporary directory under " + fs::temp_directory_path().string());
}

}  // namespace sightline::bench
